"""The subscriptions file: the packaged default, defaults and switches, every problem at once."""

from __future__ import annotations

import json

import pytest
from segment_qualtrics.actions import ACTIONS
from segment_qualtrics.subscriptions import (
    DEFAULT_CONFIG,
    MAX_SUBSCRIPTIONS,
    ConfigError,
    config_path,
    load_subscriptions,
    parse_subscriptions,
)

ENVIRON = {"QUALTRICS_DIRECTORY_ID": "POOL_D", "QUALTRICS_MAILING_LIST_ID": "CG_M"}


def contact(name: str = "Contacts", **overrides) -> dict:
    item = {"name": name, "enabled": True, "actionSlug": "addContactToXmd", "trigger": 'type = "identify"',
            "mapping": {"directoryId": "POOL_1"}}
    return {**item, **overrides}


def problems_of(data, environ=None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_subscriptions(data, "test.json", environ or {})
    assert caught.value.source == "test.json"
    assert str(len(caught.value.problems)) in str(caught.value)
    return caught.value.problems


def one_problem_with(problems: list[str], *needles: str) -> str:
    found = [p for p in problems if all(n in p for n in needles)]
    assert len(found) == 1, (needles, problems)
    return found[0]


# --- the packaged default -------------------------------------------------------------------------

def test_the_packaged_default_loads_with_its_variables_set():
    subscriptions = load_subscriptions(DEFAULT_CONFIG, environ=ENVIRON)
    by_slug = {s.action.slug: s for s in subscriptions}
    assert set(by_slug) == set(ACTIONS)
    assert by_slug["addContactToXmd"].enabled and by_slug["upsertContactTransaction"].enabled
    assert by_slug["triggerXflowWorkflow"].enabled is False
    assert by_slug["addContactToXmd"].mapping["directoryId"] == "POOL_D"
    assert by_slug["upsertContactTransaction"].mapping["directoryId"] == "POOL_D"
    assert by_slug["upsertContactTransaction"].mapping["mailingListId"]["@if"]["else"] == "CG_M"


def test_the_packaged_default_has_segments_default_triggers():
    subscriptions = load_subscriptions(DEFAULT_CONFIG, environ=ENVIRON)
    for sub in subscriptions:
        if sub.action.default_trigger:
            assert sub.trigger.source == sub.action.default_trigger
    by_slug = {s.action.slug: s for s in subscriptions}
    identify = {"type": "identify", "userId": "u"}
    created = {"type": "track", "event": "Transaction Created", "userId": "u"}
    assert by_slug["addContactToXmd"].trigger.matches(identify)
    assert not by_slug["addContactToXmd"].trigger.matches(created)
    assert by_slug["upsertContactTransaction"].trigger.matches(created)
    assert not by_slug["upsertContactTransaction"].trigger.matches({**created, "event": "Order Completed"})


def test_the_packaged_default_without_its_variables_names_each_one():
    with pytest.raises(ConfigError) as caught:
        load_subscriptions(DEFAULT_CONFIG, environ={})
    problems = caught.value.problems
    assert len([p for p in problems if "QUALTRICS_DIRECTORY_ID" in p]) == 2
    one_problem_with(problems, "QUALTRICS_MAILING_LIST_ID")
    # the disabled workflow subscription's ${QUALTRICS_WORKFLOW_URL} is not a problem
    assert not any("QUALTRICS_WORKFLOW_URL" in p for p in problems)


def test_the_default_maps_its_mailing_list_from_traits_first():
    subscriptions = load_subscriptions(DEFAULT_CONFIG, environ=ENVIRON)
    upsert = next(s for s in subscriptions if s.action.slug == "upsertContactTransaction")
    event = {"type": "track", "event": "Transaction Created", "userId": "u", "properties": {"total": 3}}
    assert upsert.action.build_payload(upsert.mapping, event).mailingListId == "CG_M"
    with_trait = {**event, "traits": {"qualtricsMailingListId": "CG_TRAIT"}}
    assert upsert.action.build_payload(upsert.mapping, with_trait).mailingListId == "CG_TRAIT"
    assert upsert.action.build_payload(upsert.mapping, event).transactionData == {"total": 3}


def test_config_path_uses_destination_config_else_the_packaged_file(tmp_path):
    assert config_path({}) == DEFAULT_CONFIG
    assert config_path({"DESTINATION_CONFIG": ""}) == DEFAULT_CONFIG
    assert config_path({"DESTINATION_CONFIG": str(tmp_path / "s.json")}) == tmp_path / "s.json"


def test_load_subscriptions_reads_destination_config(tmp_path):
    path = tmp_path / "subscriptions.json"
    path.write_text(json.dumps({"subscriptions": [contact("From file")]}))
    [sub] = load_subscriptions(environ={"DESTINATION_CONFIG": str(path)})
    assert sub.name == "From file"


def test_an_unreadable_or_non_json_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as missing:
        load_subscriptions(tmp_path / "absent.json", environ={})
    assert "cannot read" in missing.value.problems[0]
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ConfigError) as not_json:
        load_subscriptions(bad, environ={})
    assert "not valid JSON" in not_json.value.problems[0]
    assert str(bad) in str(not_json.value)


# --- defaults and switches ------------------------------------------------------------------------

def test_fields_missing_from_the_mapping_take_the_defaults():
    [sub] = parse_subscriptions({"subscriptions": [contact()]}, environ={})
    assert sub.mapping == {**ACTIONS["addContactToXmd"].default_mapping, "directoryId": "POOL_1"}


def test_a_mapped_field_replaces_its_default():
    [sub] = parse_subscriptions({"subscriptions": [contact(mapping={"directoryId": "P",
                                                                     "phone": {"@path": "$.traits.mobile"}})]},
                                environ={})
    assert sub.mapping["phone"] == {"@path": "$.traits.mobile"}
    payload = sub.action.build_payload(sub.mapping, {"type": "identify", "userId": "u",
                                                     "traits": {"phone": "1", "mobile": "2"}})
    assert payload.phone == "2"


def test_a_field_set_to_null_is_switched_off():
    [sub] = parse_subscriptions({"subscriptions": [contact(mapping={"directoryId": "P", "email": None,
                                                                     "unsubscribed": None})]}, environ={})
    assert "email" not in sub.mapping and "unsubscribed" not in sub.mapping
    payload = sub.action.build_payload(sub.mapping, {"type": "identify", "userId": "u",
                                                     "traits": {"email": "a@example.com"}})
    assert payload.email is None and payload.unsubscribed is None


def test_enabled_defaults_to_true_and_names_are_trimmed():
    item = contact(name="  Contacts  ")
    del item["enabled"]
    [sub] = parse_subscriptions({"subscriptions": [item]}, environ={})
    assert sub.enabled is True and sub.name == "Contacts"


def test_env_references_are_replaced_inside_nested_values():
    mapping = {"directoryId": "${DIR}", "embeddedData": {"stage": "env-${STAGE}", "list": ["${STAGE}"]}}
    [sub] = parse_subscriptions({"subscriptions": [contact(mapping=mapping)]},
                                environ={"DIR": "POOL_9", "STAGE": "prod"})
    assert sub.mapping["directoryId"] == "POOL_9"
    assert sub.mapping["embeddedData"] == {"stage": "env-prod", "list": ["prod"]}


def test_an_empty_subscription_list_is_valid():
    assert parse_subscriptions({"subscriptions": []}, environ={}) == []


def test_a_disabled_subscription_may_lack_required_fields_and_variables():
    item = contact(enabled=False, mapping={"directoryId": "${NOT_SET}"})
    subs = parse_subscriptions({"subscriptions": [item, contact("Other", enabled=False, mapping={})]},
                               environ={})
    assert [(s.name, s.enabled) for s in subs] == [("Contacts", False), ("Other", False)]


# --- every problem at once ------------------------------------------------------------------------

def test_every_problem_is_listed_at_once():
    data = {
        "subscriptions": [
            contact("Unknown action", actionSlug="sendSms"),
            contact("Bad trigger", trigger='type = = "identify"'),
            contact("Unknown field", mapping={"directoryId": "P", "favouriteColour": "blue"}),
            contact("Twice"),
            contact("Twice"),
            contact("Missing variable", mapping={"directoryId": "${NOT_SET_ANYWHERE}"}),
            contact("Disabled with missing variable", enabled=False, mapping={"directoryId": "${ALSO_NOT_SET}"}),
            contact("No directory", mapping={}),
            contact("Enabled as text", enabled="yes"),
            {**contact("Unknown key"), "description": "x"},
        ]
    }
    problems = problems_of(data)
    one_problem_with(problems, "subscriptions[0]", "'Unknown action'", "unknown actionSlug 'sendSms'",
                     "addContactToXmd")
    one_problem_with(problems, "subscriptions[1]", "trigger", "position 7")
    one_problem_with(problems, "subscriptions[2]", "unknown field 'favouriteColour'")
    one_problem_with(problems, "subscriptions[4]", "'Twice'", "used twice")
    one_problem_with(problems, "subscriptions[5]", "${NOT_SET_ANYWHERE}", "NOT_SET_ANYWHERE is not set")
    one_problem_with(problems, "subscriptions[7]", "required field 'directoryId'")
    one_problem_with(problems, "subscriptions[8]", '"enabled" must be true or false')
    one_problem_with(problems, "subscriptions[9]", "unknown key 'description'")
    assert not any("ALSO_NOT_SET" in p or "subscriptions[6]" in p for p in problems)
    assert not any("subscriptions[3]" in p for p in problems)
    assert len(problems) == 8


def test_a_subscription_with_several_problems_lists_them_all():
    item = contact("Broken", trigger="type =", mapping={"colour": "blue"})
    problems = problems_of({"subscriptions": [item]})
    one_problem_with(problems, "trigger")
    one_problem_with(problems, "unknown field 'colour'")
    one_problem_with(problems, "required field 'directoryId'")


def test_a_duplicate_name_is_reported_even_when_the_duplicate_has_other_problems():
    problems = problems_of({"subscriptions": [contact("Same"), contact("Same", trigger="type =")]})
    one_problem_with(problems, "subscriptions[1]", "used twice")
    one_problem_with(problems, "subscriptions[1]", "trigger")


def test_names_differing_only_in_surrounding_spaces_are_duplicates():
    problems = problems_of({"subscriptions": [contact("Same"), contact(" Same ")]})
    one_problem_with(problems, "used twice")


def test_more_than_fifty_subscriptions_is_a_problem():
    at_limit = {"subscriptions": [contact(f"s{i}") for i in range(MAX_SUBSCRIPTIONS)]}
    assert len(parse_subscriptions(at_limit, environ={})) == MAX_SUBSCRIPTIONS
    over = {"subscriptions": [contact(f"s{i}") for i in range(MAX_SUBSCRIPTIONS + 1)]}
    one_problem_with(problems_of(over), "51 subscriptions", "at most 50")


def test_a_required_field_switched_off_has_no_mapping():
    item = {"name": "T", "actionSlug": "upsertContactTransaction", "trigger": 'type = "track"',
            "mapping": {"directoryId": "P", "mailingListId": None}}
    one_problem_with(problems_of({"subscriptions": [item]}), "required field 'mailingListId'")


def test_a_required_field_with_a_default_needs_no_mapping():
    item = {"name": "T", "actionSlug": "upsertContactTransaction", "trigger": 'type = "track"',
            "mapping": {"directoryId": "P"}}   # mailingListId and extRef have defaults
    [sub] = parse_subscriptions({"subscriptions": [item]}, environ={})
    assert sub.mapping["mailingListId"] == {"@path": "$.traits.qualtricsMailingListId"}


def test_an_empty_variable_is_a_value_but_not_for_a_required_field():
    one_problem_with(problems_of({"subscriptions": [contact(mapping={"directoryId": "${EMPTY}"})]},
                                 environ={"EMPTY": ""}), "'directoryId' is mapped to an empty string")
    # An optional template Parameter left blank: the config loads, the field is dropped per event.
    [sub] = parse_subscriptions({"subscriptions": [contact(mapping={"directoryId": "POOL_1", "phone": "${EMPTY}"})]},
                                environ={"EMPTY": ""})
    assert sub.mapping["phone"] == ""


def test_a_bad_mapping_directive_is_a_problem():
    problems = problems_of({"subscriptions": [contact(mapping={"directoryId": {"@nope": 1}})]})
    one_problem_with(problems, "mapping", "@nope")


@pytest.mark.parametrize(
    ("item", "needle"),
    [
        (3, "must be an object"),
        ({**contact(), "name": ""}, 'non-empty string "name"'),
        ({**contact(), "name": 7}, 'non-empty string "name"'),
        ({**contact(), "trigger": None}, '"trigger" string'),
        ({**contact(), "mapping": []}, '"mapping" must be an object'),
        ({**contact(), "actionSlug": None}, "unknown actionSlug None"),
    ],
)
def test_malformed_subscriptions(item, needle):
    one_problem_with(problems_of({"subscriptions": [item]}), needle)


@pytest.mark.parametrize("data", [[], {"subs": []}, {"subscriptions": {}}, None])
def test_the_top_level_must_hold_a_subscriptions_array(data):
    one_problem_with(problems_of(data), '"subscriptions" array')


def test_unknown_top_level_keys_are_a_problem():
    one_problem_with(problems_of({"subscriptions": [contact()], "version": 2}), "unknown top-level key(s): version")


def test_the_error_text_lists_every_problem():
    with pytest.raises(ConfigError) as caught:
        parse_subscriptions({"subscriptions": [contact("A", actionSlug="x"), contact("B", trigger="(")]},
                            "conf.json", {})
    text = str(caught.value)
    assert text.startswith("subscriptions file conf.json has 2 problem(s):")
    assert all(f"  - {p}" in text for p in caught.value.problems)
