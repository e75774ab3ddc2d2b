"""The three actions: default mappings, Segment's payload rules, dates and flattening (actions.py)."""

from __future__ import annotations

import json

import pytest
from segment_qualtrics.destination.actions import (
    ACTIONS,
    ContactPayload,
    TransactionPayload,
    flat_value,
    qualtrics_datetime,
)
from segment_qualtrics.destination.errors import PermanentError

ADD_CONTACT = ACTIONS["addContactToXmd"]
UPSERT = ACTIONS["upsertContactTransaction"]
WORKFLOW = ACTIONS["triggerXflowWorkflow"]

IDENTIFY = {
    "type": "identify",
    "messageId": "m-1",
    "userId": "user-1001",
    "anonymousId": "anon-1",
    "traits": {"email": "ada@example.com", "phone": "+44 20 7946 0000", "firstName": "Ada",
               "lastName": "Lovelace", "language": "FR"},
    "timestamp": "2024-01-02T03:04:05.678Z",
}
TRANSACTION = {
    "type": "track",
    "messageId": "m-2",
    "event": "Transaction Created",
    "userId": "user-1001",
    "traits": {"email": "ada@example.com", "qualtricsMailingListId": "CG_1"},
    "properties": {"orderId": "o-1", "total": 129.95},
    "context": {"ip": "203.0.113.7"},
    "timestamp": "2024-01-02T03:04:05Z",
}


def build(action, mapping, event):
    """As a subscription does: the action's defaults, then the subscription's own fields."""
    return action.build_payload({**action.default_mapping, **mapping}, event)


def build_error(action, mapping, event) -> PermanentError:
    with pytest.raises(PermanentError) as caught:
        build(action, mapping, event)
    assert caught.value.code == "invalid_payload"
    assert caught.value.retryable is False
    return caught.value


# --- the actions and their defaults ---------------------------------------------------------------

def test_the_three_actions_and_their_default_triggers():
    assert {slug: a.default_trigger for slug, a in ACTIONS.items()} == {
        "addContactToXmd": 'type = "identify"',
        "upsertContactTransaction": 'type = "track" and event = "Transaction Created"',
        "triggerXflowWorkflow": None,
        "deleteContact": 'type = "delete"',
    }


def test_required_fields_are_as_in_segment():
    required = {slug: sorted(k for k, f in a.fields.items() if f.required) for slug, a in ACTIONS.items()}
    assert required == {
        "addContactToXmd": ["directoryId"],
        "upsertContactTransaction": ["directoryId", "extRef", "mailingListId"],
        "triggerXflowWorkflow": ["workflowUrl"],
        "deleteContact": ["directoryId"],
    }


def test_add_contact_default_mapping():
    payload = build(ADD_CONTACT, {"directoryId": "POOL_1"}, IDENTIFY)
    assert isinstance(payload, ContactPayload)
    assert payload.model_dump() == {
        "directoryId": "POOL_1", "extRef": "user-1001", "email": "ada@example.com",
        "phone": "+44 20 7946 0000", "firstName": "Ada", "lastName": "Lovelace", "language": "FR",
        "unsubscribed": False, "embeddedData": None,
    }


def test_add_contact_ext_ref_has_no_anonymous_fallback():
    payload = build(ADD_CONTACT, {"directoryId": "POOL_1"}, {**IDENTIFY, "userId": None})
    assert payload.extRef is None


def test_email_at_the_root_wins_over_traits_email():
    payload = build(ADD_CONTACT, {"directoryId": "POOL_1"}, {**IDENTIFY, "email": "root@example.com"})
    assert payload.email == "root@example.com"


def test_email_falls_back_to_traits_email_when_the_root_one_is_null():
    payload = build(ADD_CONTACT, {"directoryId": "POOL_1"}, {**IDENTIFY, "email": None})
    assert payload.email == "ada@example.com"


def test_language_defaults_to_en():
    traits = {k: v for k, v in IDENTIFY["traits"].items() if k != "language"}
    assert build(ADD_CONTACT, {"directoryId": "POOL_1"}, {**IDENTIFY, "traits": traits}).language == "EN"
    assert build(ADD_CONTACT, {"directoryId": "POOL_1"},
                 {**IDENTIFY, "traits": {**traits, "language": None}}).language == "EN"


def test_upsert_default_mapping():
    payload = build(UPSERT, {"directoryId": "POOL_1"}, TRANSACTION)
    assert isinstance(payload, TransactionPayload)
    assert payload.mailingListId == "CG_1"
    assert payload.extRef == "user-1001"
    assert payload.email == "ada@example.com"
    assert payload.language == "EN"
    assert payload.unsubscribed is False
    assert payload.contactId is None
    assert payload.transactionDate == "2024-01-02 03:04:05"
    assert payload.transactionData is None   # no default: the subscription maps it


def test_upsert_contact_id_comes_from_traits():
    event = {**TRANSACTION, "traits": {**TRANSACTION["traits"], "qualtricsContactId": "CID_1"}}
    assert build(UPSERT, {"directoryId": "POOL_1"}, event).contactId == "CID_1"


def test_upsert_ext_ref_falls_back_to_the_anonymous_id():
    event = {**TRANSACTION, "userId": None, "anonymousId": "anon-9"}
    assert build(UPSERT, {"directoryId": "POOL_1"}, event).extRef == "anon-9"


def test_upsert_without_any_id_misses_ext_ref():
    event = {k: v for k, v in TRANSACTION.items() if k != "userId"}
    error = build_error(UPSERT, {"directoryId": "POOL_1"}, event)
    assert error.message == "The root value is missing the required field 'extRef'."


def test_workflow_default_event_payload():
    payload = build(WORKFLOW, {"workflowUrl": "https://sjc1.qualtrics.com/inbound-event/v1/x"}, TRANSACTION)
    assert payload.workflowUrl == "https://sjc1.qualtrics.com/inbound-event/v1/x"
    assert payload.eventPayload == {
        "event": "Transaction Created", "type": "track", "userId": "user-1001",
        "properties": {"orderId": "o-1", "total": 129.95}, "traits": TRANSACTION["traits"],
        "context": {"ip": "203.0.113.7"},
    }


def test_workflow_event_payload_leaves_out_what_the_event_lacks():
    payload = build(WORKFLOW, {"workflowUrl": "https://x.qualtrics.com/w"}, {"type": "identify", "userId": "u"})
    assert payload.eventPayload == {"type": "identify", "userId": "u"}


def test_workflow_event_payload_switched_off_sends_none():
    payload = WORKFLOW.build_payload({"workflowUrl": "https://x.qualtrics.com/w"}, TRANSACTION)
    assert payload.eventPayload is None


# --- Segment's payload rules ----------------------------------------------------------------------

def test_root_keys_that_are_empty_or_null_are_dropped():
    event = {**IDENTIFY, "traits": {"email": "", "phone": None, "firstName": "Ada", "lastName": ""}}
    payload = build(ADD_CONTACT, {"directoryId": "POOL_1"}, event)
    assert payload.email is None and payload.phone is None and payload.lastName is None
    assert payload.firstName == "Ada"
    assert payload.contact_body() == {"firstName": "Ada", "extRef": "user-1001", "unsubscribed": False,
                                      "language": "EN"}


def test_an_empty_required_field_counts_as_missing():
    error = build_error(ADD_CONTACT, {"directoryId": ""}, IDENTIFY)
    assert error.message == "The root value is missing the required field 'directoryId'."


def test_a_missing_required_field_has_segments_message():
    error = build_error(ADD_CONTACT, {}, IDENTIFY)
    assert error.message == "The root value is missing the required field 'directoryId'."


def test_every_missing_required_field_is_named():
    error = build_error(UPSERT, {}, {**TRANSACTION, "traits": {}})
    assert "'directoryId'" in error.message and "'mailingListId'" in error.message


def test_numbers_become_strings():
    event = {**IDENTIFY, "userId": 1001, "traits": {"phone": 12345, "firstName": 7}}
    payload = build(ADD_CONTACT, {"directoryId": "POOL_1"}, event)
    assert payload.phone == "12345"
    assert payload.extRef == "1001"
    assert payload.firstName == "7"


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("false", False), (True, True), (False, False)])
def test_unsubscribed_is_coerced_to_a_boolean(value, expected):
    payload = build(ADD_CONTACT, {"directoryId": "POOL_1", "unsubscribed": value}, IDENTIFY)
    assert payload.unsubscribed is expected


def test_unsubscribed_mapped_from_the_event():
    payload = build(ADD_CONTACT, {"directoryId": "POOL_1", "unsubscribed": {"@path": "$.traits.optOut"}},
                    {**IDENTIFY, "traits": {"optOut": "true"}})
    assert payload.unsubscribed is True


def test_a_value_of_the_wrong_shape_is_a_permanent_error_naming_the_field():
    error = build_error(ADD_CONTACT, {"directoryId": "POOL_1", "email": {"@path": "$.traits"}}, IDENTIFY)
    assert "'email'" in error.message


def test_fields_outside_the_action_are_ignored():
    payload = ADD_CONTACT.build_payload({"directoryId": "POOL_1", "mailingListId": "CG_1"}, IDENTIFY)
    assert not hasattr(payload, "mailingListId")


def test_a_mapping_that_cannot_apply_to_the_event_is_a_permanent_error():
    # @json decode of text that is not JSON: no retry can fix it, so it must go to the DLQ with a reason.
    mapping = {"directoryId": "POOL_1",
               "embeddedData": {"@json": {"mode": "decode", "value": {"@path": "$.traits.blob"}}}}
    error = build_error(ADD_CONTACT, mapping, {**IDENTIFY, "traits": {"blob": "{not json"}})
    assert "embeddedData" in error.message


@pytest.mark.parametrize("url", ["ftp://sjc1.qualtrics.com/w", "not a url", "https:///no-host",
                                 "//sjc1.qualtrics.com/w", "javascript:alert(1)"])
def test_the_workflow_url_must_be_an_absolute_web_url(url):
    # Which hosts may get the API token (https qualtrics.com, or QUALTRICS_BASE_URL) is the client's check.
    error = build_error(WORKFLOW, {"workflowUrl": url}, TRANSACTION)
    assert "'workflowUrl'" in error.message and "https" in error.message


def test_a_missing_workflow_url_is_named():
    error = build_error(WORKFLOW, {}, TRANSACTION)
    assert error.message == "The root value is missing the required field 'workflowUrl'."


# --- dates ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1612137600000, "2021-02-01 00:00:00"),
        (1612137601999, "2021-02-01 00:00:01"),
        (1612137600000.5, "2021-02-01 00:00:00"),
        ("1612137600000", "2021-02-01 00:00:00"),
        (" 1612137600000 ", "2021-02-01 00:00:00"),
        ("2021-02-01T10:11:12Z", "2021-02-01 10:11:12"),
        ("2021-02-01T10:11:12.999Z", "2021-02-01 10:11:12"),
        ("2021-02-01T10:11:12+00:00", "2021-02-01 10:11:12"),
        ("2021-02-01T12:11:12+02:00", "2021-02-01 10:11:12"),
        ("2021-02-01T01:11:12.5-05:00", "2021-02-01 06:11:12"),
        ("2021-02-01", "2021-02-01 00:00:00"),
        ("2021-02-01 10:11:12", "2021-02-01 10:11:12"),
        ("2021-02-01T10:11:12", "2021-02-01 10:11:12"),
    ],
)
def test_qualtrics_datetime(value, expected):
    assert qualtrics_datetime(value) == expected


def test_a_naive_string_is_read_as_utc_whatever_the_host_zone(monkeypatch):
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert qualtrics_datetime("2021-07-01 10:11:12") == "2021-07-01 10:11:12"
        assert qualtrics_datetime("2021-07-01") == "2021-07-01 00:00:00"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


@pytest.mark.parametrize("value", ["nope", "", "2021-13-01", "01/02/2021", True, False, None, {"a": 1}, [1],
                                   float("nan"), 1e20])
def test_an_unparseable_date_is_an_error_never_now(value):
    with pytest.raises(ValueError):
        qualtrics_datetime(value)


def test_a_bad_transaction_date_is_a_permanent_error_naming_the_field():
    error = build_error(UPSERT, {"directoryId": "POOL_1", "transactionDate": "last tuesday"}, TRANSACTION)
    assert "'transactionDate'" in error.message and "last tuesday" in error.message


def test_transaction_date_mapped_from_a_number():
    payload = build(UPSERT, {"directoryId": "POOL_1", "transactionDate": {"@path": "$.properties.at"}},
                    {**TRANSACTION, "properties": {"at": 1612137600000}})
    assert payload.transactionDate == "2021-02-01 00:00:00"


def test_no_timestamp_leaves_the_transaction_date_empty():
    event = {k: v for k, v in TRANSACTION.items() if k != "timestamp"}
    assert build(UPSERT, {"directoryId": "POOL_1"}, event).transactionDate is None


# --- transaction data and embedded data -----------------------------------------------------------

def test_flat_value_keeps_scalars_and_stringifies_anything_else():
    assert [flat_value(v) for v in ("a", 1, 1.5, True, False)] == ["a", 1, 1.5, True, False]
    assert flat_value({"b": [1, 2]}) == '{"b":[1,2]}'
    assert flat_value([1, "ü"]) == '[1,"ü"]'


def test_nested_transaction_data_values_are_the_json_of_that_value_only():
    properties = {"orderId": "o-1", "total": 10.5, "paid": True, "items": [{"sku": "A", "qty": 2}],
                  "address": {"city": "Paris"}, "coupon": None}
    payload = build(UPSERT, {"directoryId": "POOL_1", "transactionData": {"@path": "$.properties"}},
                    {**TRANSACTION, "properties": properties})
    assert payload.transactionData == {
        "orderId": "o-1", "total": 10.5, "paid": True,
        "items": '[{"sku":"A","qty":2}]', "address": '{"city":"Paris"}',
    }
    # Segment's bug would put the whole object there: make sure we do not.
    assert json.loads(payload.transactionData["items"]) == properties["items"]


def test_nested_embedded_data_values_are_flattened_and_nulls_dropped():
    payload = build(ADD_CONTACT, {"directoryId": "POOL_1", "embeddedData": {"@path": "$.traits.extra"}},
                    {**IDENTIFY, "traits": {"extra": {"plan": "pro", "seats": 3, "tags": ["a"], "gone": None}}})
    assert payload.embeddedData == {"plan": "pro", "seats": 3, "tags": '["a"]'}


# --- bodies ---------------------------------------------------------------------------------------

def test_contact_body_keys_in_segments_order():
    payload = build(ADD_CONTACT, {"directoryId": "POOL_1", "embeddedData": {"@path": "$.traits.extra"}},
                    {**IDENTIFY, "traits": {**IDENTIFY["traits"], "extra": {"plan": "pro"}}})
    body = payload.contact_body()
    assert list(body) == ["firstName", "lastName", "phone", "email", "extRef", "unsubscribed", "language",
                          "embeddedData"]
    assert "directoryId" not in body


def test_contact_body_omits_absent_values_but_keeps_false():
    payload = ContactPayload(directoryId="POOL_1", extRef="u", unsubscribed=False)
    assert payload.contact_body() == {"extRef": "u", "unsubscribed": False}


def test_lookup_identifiers_in_segments_filter_order():
    payload = TransactionPayload(directoryId="P", mailingListId="CG", email="e@x.com", phone="123", extRef="u")
    assert list(payload.lookup_identifiers().items()) == [("extRef", "u"), ("phone", "123"), ("email", "e@x.com")]


def test_lookup_identifiers_only_those_present():
    payload = TransactionPayload(directoryId="P", mailingListId="CG", email="e@x.com", extRef="u")
    assert payload.lookup_identifiers() == {"extRef": "u", "email": "e@x.com"}
    assert "phone" not in payload.lookup_identifiers()
