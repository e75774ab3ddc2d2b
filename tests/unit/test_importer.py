"""Import from Segment (importer.py): a Public API subscriptions export → our subscriptions file."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from segment_qualtrics.destination.actions import ACTIONS
from segment_qualtrics.destination.subscriptions import MAX_SUBSCRIPTIONS, parse_subscriptions
from segment_qualtrics.tools.importer import NOT_IN_SEGMENT, ExportError, import_segment, segment_subscriptions

# As Segment's Public API answers GET /destinations/{id}/subscriptions (the UI stores every field it shows).
CONTACT = {
    "id": "sub-1", "name": "Create contact", "actionId": "act-1", "actionSlug": "addContactToXmd",
    "destinationId": "dest-1", "modelId": "", "enabled": True, "trigger": 'type = "identify"',
    "settings": {
        "directoryId": "POOL_123",
        "extRef": {"@path": "$.userId"},
        "email": {"@if": {"exists": {"@path": "$.email"}, "then": {"@path": "$.email"},
                          "else": {"@path": "$.traits.email"}}},
        "firstName": {"@path": "$.traits.first_name"},
        "language": {"@if": {"exists": {"@path": "$.traits.language"}, "then": {"@path": "$.traits.language"},
                             "else": "EN"}},
        "unsubscribed": False,
    },
}
TRANSACTION = {
    "id": "sub-2", "name": "Orders", "actionId": "act-2", "actionSlug": "upsertContactTransaction",
    "destinationId": "dest-1", "modelId": "", "enabled": True,
    "trigger": 'type = "track", event = "Order Completed"',   # Segment's own comma style
    "settings": {"directoryId": "POOL_123", "mailingListId": "CG_9", "extRef": {"@path": "$.userId"},
                 "transactionData": {"@path": "$.properties"}, "transactionDate": {"@path": "$.timestamp"}},
}
WORKFLOW = {
    "id": "sub-3", "name": "Survey", "actionSlug": "triggerXflowWorkflow", "enabled": False,
    "trigger": 'type = "track" and event = "Order Completed"',
    "settings": {"workflowUrl": "https://sjc1.qualtrics.com/inbound-event/v1/events/json/triggers?x=1",
                 "eventPayload": {"order": {"@path": "$.properties.orderId"}}},
}


def export(*subscriptions) -> dict:
    return {"data": {"subscriptions": list(subscriptions), "pagination": {"current": "MA==", "totalEntries": 3}}}


def loaded(result):
    """The imported file, through the loader the functions use: name → Subscription."""
    return {s.name: s for s in parse_subscriptions(result.config, "imported", {})}


# --- input shapes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [
    export(CONTACT, TRANSACTION),
    {"subscriptions": [CONTACT, TRANSACTION]},
    [CONTACT, TRANSACTION],
    {"data": {"data": {"subscriptions": [CONTACT, TRANSACTION]}}},   # some tools wrap the answer once more
])
def test_every_accepted_shape_gives_the_subscriptions(shape):
    assert [s["id"] for s in segment_subscriptions(shape)] == ["sub-1", "sub-2"]


@pytest.mark.parametrize("data", [{"data": {}}, {"subs": []}, "x", 3, None])
def test_anything_else_is_an_export_error(data):
    with pytest.raises(ExportError):
        segment_subscriptions(data)


# --- what carries over ----------------------------------------------------------------------------

def test_a_clean_export_carries_over_completely_and_loads():
    result = import_segment(export(CONTACT, TRANSACTION, WORKFLOW), {})
    assert result.complete and result.not_carried == [] and result.problems == []
    subs = loaded(result)
    assert [(s.name, s.enabled, s.action.slug) for s in subs.values()] == [
        ("Create contact", True, "addContactToXmd"), ("Orders", True, "upsertContactTransaction"),
        ("Survey", False, "triggerXflowWorkflow")]
    assert subs["Orders"].trigger.source == TRANSACTION["trigger"]
    assert subs["Orders"].trigger.matches({"type": "track", "event": "Order Completed"})


@pytest.mark.parametrize("segment", [CONTACT, TRANSACTION, WORKFLOW])
def test_the_loaded_mapping_is_exactly_segments(segment):
    # Segment maps only what its settings hold: our defaults must not fill the gaps.
    [sub] = loaded(import_segment(export(segment), {})).values()
    assert sub.mapping == segment["settings"]


def test_fields_mapped_as_our_default_are_left_out_and_unmapped_ones_switched_off():
    [written] = import_segment(export(CONTACT), {}).config["subscriptions"]
    assert written["mapping"] == {"directoryId": "POOL_123", "firstName": {"@path": "$.traits.first_name"},
                                  "phone": None, "lastName": None}
    assert list(written) == ["name", "enabled", "actionSlug", "trigger", "mapping"]


def test_switched_off_fields_are_noted():
    result = import_segment(export(CONTACT), {})
    [note] = result.notes
    assert "'Create contact'" in note and "switched off (null)" in note and "phone, lastName" in note


def test_settings_as_json_text_and_mapping_instead_of_settings_are_read():
    as_text = {**TRANSACTION, "settings": json.dumps(TRANSACTION["settings"])}
    as_mapping = {k: v for k, v in TRANSACTION.items() if k != "settings"} | {"mapping": TRANSACTION["settings"]}
    for item in (as_text, as_mapping):
        [sub] = loaded(import_segment([item], {})).values()
        assert sub.mapping == TRANSACTION["settings"]


# --- what does not carry over ---------------------------------------------------------------------

def test_an_unknown_action_is_reported_by_name_and_the_rest_written():
    result = import_segment(export(CONTACT, {**TRANSACTION, "name": "SMS", "actionSlug": "sendSms"}), {})
    assert not result.complete
    [line] = result.not_carried
    assert "'SMS'" in line and "unknown actionSlug 'sendSms'" in line
    assert list(loaded(result)) == ["Create contact"]


def test_unknown_fields_and_segment_internal_settings_are_dropped_and_reported():
    item = {**CONTACT, "settings": {**CONTACT["settings"], "favouriteColour": "blue",
                                    "__segment_internal_sync_mode": "upsert"}}
    result = import_segment([item], {})
    assert len(result.not_carried) == 2
    assert any("'favouriteColour'" in line and "unknown field" in line for line in result.not_carried)
    assert any("Segment-internal" in line for line in result.not_carried)
    assert loaded(result)["Create contact"].mapping == CONTACT["settings"]


def test_an_unsupported_directive_drops_its_field_switched_off():
    item = {**WORKFLOW, "settings": {**WORKFLOW["settings"], "eventPayload": {"@arrayPathz": "$.x"}}}
    result = import_segment([item], {})
    [line] = result.not_carried
    assert "'Survey'" in line and "eventPayload" in line and "@arrayPathz" in line
    assert "eventPayload" not in loaded(result)["Survey"].mapping   # off, not our default payload


def test_a_trigger_that_does_not_parse_is_not_imported():
    result = import_segment([CONTACT, {**TRANSACTION, "trigger": 'event = = "x"'}], {})
    [line] = result.not_carried
    assert "'Orders'" in line and "trigger" in line and "position" in line
    assert list(loaded(result)) == ["Create contact"]


def test_an_enabled_subscription_missing_a_required_field_is_imported_disabled():
    item = {**CONTACT, "settings": {k: v for k, v in CONTACT["settings"].items() if k != "directoryId"}}
    result = import_segment([item], {})
    [line] = result.not_carried
    assert "imported disabled" in line and "directoryId" in line
    assert loaded(result)["Create contact"].enabled is False


def test_a_value_that_does_not_fit_its_field_disables_the_subscription():
    item = {**CONTACT, "settings": {**CONTACT["settings"], "unsubscribed": "sometimes"}}
    result = import_segment([item], {})
    assert "imported disabled" in result.not_carried[0] and "unsubscribed" in result.not_carried[0]


def test_duplicate_names_are_made_unique():
    result = import_segment([CONTACT, {**CONTACT, "id": "sub-9"}], {})
    assert list(loaded(result)) == ["Create contact", "Create contact (2)"]
    assert any("renamed 'Create contact (2)'" in note for note in result.notes)


def test_at_most_fifty_subscriptions_are_written():
    many = [{**CONTACT, "id": f"s{i}", "name": f"Contact {i}"} for i in range(MAX_SUBSCRIPTIONS + 2)]
    result = import_segment(many, {})
    assert len(loaded(result)) == MAX_SUBSCRIPTIONS
    assert len(result.not_carried) == 2 and "at most 50" in result.not_carried[0]


def test_a_workflow_url_outside_qualtrics_is_noted():
    item = {**WORKFLOW, "settings": {"workflowUrl": "https://hooks.example.com/x"}}
    result = import_segment([item], {})
    assert any("hooks.example.com" in note and "workflow_url_not_allowed" in note for note in result.notes)


def test_the_workflow_url_note_uses_the_workers_rule():
    # urlsplit reads the host as iad1.qualtrics.com; the HTTP client would connect to evil.example.
    item = {**WORKFLOW, "settings": {"workflowUrl": "https://evil.example\\@iad1.qualtrics.com/x"}}
    assert any("backslash" in note and "workflow_url_not_allowed" in note for note in import_segment([item], {}).notes)
    item = {**WORKFLOW, "settings": {"workflowUrl": "https://iad1.qualtrics.com/inbound-event/v1/events/json"}}
    assert not any("workflowUrl" in note for note in import_segment([item], {}).notes)


def test_a_misspelt_slug_case_and_a_missing_name_are_fixed_and_noted():
    item = {**CONTACT, "actionSlug": "AddContactToXmd", "name": ""}
    result = import_segment([item], {})
    [sub] = loaded(result).values()
    assert sub.action.slug == "addContactToXmd" and sub.name == "addContactToXmd sub-1"
    assert len(result.notes) == 3   # slug, name, switched-off fields


# --- property: whatever Segment maps, the loaded mapping is the same ------------------------------

_VALUE = st.one_of(
    st.text(alphabet="abcXYZ_019", min_size=1, max_size=8),
    st.builds(lambda p: {"@path": f"$.traits.{p}"}, st.text(alphabet="abcdef", min_size=1, max_size=6)),
    st.builds(lambda p, e: {"@if": {"exists": {"@path": f"$.{p}"}, "then": {"@path": f"$.{p}"}, "else": e}},
              st.text(alphabet="abcdef", min_size=1, max_size=6), st.text(alphabet="xyz", max_size=3)),
)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_supported_segment_mapping_loads_unchanged(data):
    slug = data.draw(st.sampled_from(sorted(set(ACTIONS) - set(NOT_IN_SEGMENT))))   # what an export can hold
    action = ACTIONS[slug]
    optional = [k for k, f in action.fields.items() if f.type == "string" and not f.required]
    chosen = data.draw(st.lists(st.sampled_from(optional), unique=True)) if optional else []
    settings_ = {k: data.draw(_VALUE) for k in chosen}
    settings_ |= {"directoryId": "POOL_1", "mailingListId": "CG_1", "extRef": {"@path": "$.userId"},
                  "workflowUrl": "https://iad1.qualtrics.com/w"}
    settings_ = {k: v for k, v in settings_.items() if k in action.fields}
    item = {"name": "Any", "actionSlug": slug, "enabled": True, "trigger": 'type = "track"', "settings": settings_}
    result = import_segment([item], {})
    assert result.complete, result.not_carried
    [sub] = loaded(result).values()
    assert sub.mapping == settings_
