"""The queue message envelope (envelope.py)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from segment_qualtrics.destination.envelope import (
    ENVELOPE_VERSION,
    EnvelopeError,
    QueueMessage,
    sqs_entry_problem,
    sqs_safe,
)

EVENT = {"type": "identify", "messageId": "seg-1", "userId": "user-1", "traits": {"name": "Zoë"}}
MESSAGE = QueueMessage("addContactToXmd", "Contacts", "seg-1", "2024-01-01T00:00:00.250Z", EVENT)


def body(**overrides) -> str:
    data = {"version": ENVELOPE_VERSION, "action": "addContactToXmd", "subscription": "Contacts",
            "messageId": "seg-1", "receivedAt": "2024-01-01T00:00:00Z", "event": EVENT}
    data.update(overrides)
    return json.dumps({k: v for k, v in data.items() if v is not ...})


def test_round_trip():
    assert QueueMessage.from_json(MESSAGE.to_json()) == MESSAGE


def test_the_json_form_names_its_fields_and_keeps_unicode():
    text = MESSAGE.to_json()
    assert json.loads(text) == {"version": 1, "action": "addContactToXmd", "subscription": "Contacts",
                                "messageId": "seg-1", "receivedAt": "2024-01-01T00:00:00.250Z", "event": EVENT}
    assert "Zoë" in text and " " not in text.replace("Zoë", "")


def test_the_idempotency_key_uses_the_segment_message_id():
    assert MESSAGE.idempotency_key == "addContactToXmd#Contacts#seg-1"
    other_subscription = QueueMessage("addContactToXmd", "Other", "seg-1", "", EVENT)
    other_event = QueueMessage("addContactToXmd", "Contacts", "seg-2", "", EVENT)
    later_copy = QueueMessage("addContactToXmd", "Contacts", "seg-1", "2024-02-02T00:00:00Z", EVENT)
    assert len({MESSAGE.idempotency_key, other_subscription.idempotency_key, other_event.idempotency_key}) == 3
    assert later_copy.idempotency_key == MESSAGE.idempotency_key


def test_attributes_are_sqs_string_attributes():
    assert MESSAGE.attributes() == {
        "action": {"DataType": "String", "StringValue": "addContactToXmd"},
        "subscription": {"DataType": "String", "StringValue": "Contacts"},
        "segmentMessageId": {"DataType": "String", "StringValue": "seg-1"},
        "eventType": {"DataType": "String", "StringValue": "identify"},
    }


def test_received_at_is_optional():
    assert QueueMessage.from_json(body(receivedAt=...)).received_at == ""


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("not json", "not JSON"),
        ("", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ("null", "not a JSON object"),
        (body(version=2), "version 2"),
        (body(version=...), "version None"),
        (body(action=...), "lacks action"),
        (body(subscription="", messageId=None), "lacks subscription, messageId"),
        (body(event={}), "lacks event"),
        (body(event=[EVENT]), "event is not an object"),
        (body(event="identify"), "event is not an object"),
        # A hand-made message: the key, the subscription lookup and the dead letter's reason need text.
        (body(messageId=12345), "messageId not a string"),
        (body(messageId={"a": 1}), "messageId not a string"),
        (body(action=["addContactToXmd"]), "action not a string"),
        (body(subscription=7), "subscription not a string"),
        (body(subscription=["Contacts"]), "subscription not a string"),
        (body(receivedAt=1), "receivedAt not a string"),
    ],
)
def test_bad_bodies_are_an_envelope_error(text, needle):
    with pytest.raises(EnvelopeError) as caught:
        QueueMessage.from_json(text)
    assert needle in str(caught.value)


def test_a_body_that_is_not_utf8_is_an_envelope_error():
    with pytest.raises(EnvelopeError):
        QueueMessage.from_json(b"\xff\xfe")


# --- what SQS and DynamoDB take ---------------------------------------------------------------------

def test_the_idempotency_key_of_a_normal_id_keeps_its_format():
    assert MESSAGE.idempotency_key == "addContactToXmd#Contacts#seg-1"
    long_normal = QueueMessage("addContactToXmd", "Contacts", "m" * 900, "", EVENT)
    assert long_normal.idempotency_key == "addContactToXmd#Contacts#" + "m" * 900   # 925 bytes: still plain


@pytest.mark.parametrize("message_id", ["m" * 3000, "é" * 600, "\U0001f600" * 300, "m" * 10**6, "\ud800" * 2000])
def test_a_long_idempotency_key_is_hashed_below_dynamodbs_limit(message_id):
    message = QueueMessage("addContactToXmd", "Contacts", message_id, "", EVENT)
    key = message.idempotency_key
    assert key.startswith("sha256#") and len(key.encode()) <= 2048
    assert key == QueueMessage("addContactToXmd", "Contacts", message_id, "x", {}).idempotency_key   # stable
    assert key != QueueMessage("addContactToXmd", "Other", message_id, "", EVENT).idempotency_key
    assert QueueMessage.from_json(message.to_json()).message_id == message_id   # the id stays in the message


def test_a_name_with_a_hash_cannot_take_another_messages_key():
    # "Orders" + messageId "vip#m-victim" was the same text as "Orders#vip" + "m-victim": one event lost.
    attacker = QueueMessage("addContactToXmd", "Orders", "vip#m-victim", "", EVENT)
    victim = QueueMessage("addContactToXmd", "Orders#vip", "m-victim", "", EVENT)
    assert attacker.idempotency_key == "addContactToXmd#Orders#vip#m-victim"   # no '#' in the name: unchanged
    assert victim.idempotency_key.startswith("sha256t#") and victim.idempotency_key != attacker.idempotency_key
    assert victim.idempotency_key == QueueMessage("addContactToXmd", "Orders#vip", "m-victim", "x", {}).idempotency_key


_PART = st.text(alphabet="ab#é\ud800", max_size=6) | st.sampled_from(["sha256", "sha256t", "a" * 1100, "#" * 1100])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_PART, _PART, _PART), min_size=2, max_size=12))
def test_distinct_messages_never_share_an_idempotency_key(triples):
    keys = {triple: QueueMessage(*triple, "", EVENT).idempotency_key for triple in triples}
    assert len(set(keys.values())) == len(keys)
    assert all(len(key.encode("utf-8", "surrogatepass")) <= 2048 for key in keys.values())


def test_characters_sqs_refuses_are_escaped_in_the_body_and_replaced_in_attributes():
    event = {"type": "identify\ufffe", "userId": "a\uffffb\ud800", "x\ufffe": ["\x01", "\U0001fffe"]}
    message = QueueMessage("addContactToXmd", "Contacts \ufffe", "id\ufffe\x00", "", event)
    text = message.to_json()
    assert sqs_entry_problem(text, message.attributes()) is None
    assert "\\ufffe" in text and "\\uffff" in text and "\\ud800" in text
    assert QueueMessage.from_json(text) == message   # the same values
    assert message.attributes()["segmentMessageId"]["StringValue"] == "id\ufffd\ufffd"


def test_sqs_safe_leaves_acceptable_text_alone():
    text = '{"a":"\\u0001 \t é \U0001f600 \ufffd"}'
    assert sqs_safe(text) is text


def test_an_empty_attribute_value_is_replaced():
    message = QueueMessage("addContactToXmd", "Contacts", "", "", {"type": ""})
    assert sqs_entry_problem(message.to_json(), message.attributes()) is None


@pytest.mark.parametrize("body,attributes,problem", [
    ("", {}, "an empty body"),
    ("\ufffe", {}, "the body holds '\\ufffe'"),
    ("{}", {"a": {"DataType": "String", "StringValue": ""}}, "attribute a is empty"),
    ("{}", {"a": {"DataType": "String", "StringValue": "\x08"}}, "attribute a holds '\\x08'"),
    ("x" * (1024 * 1024), {"a": {"DataType": "String", "StringValue": "v"}}, "1048584 bytes, over 1048576"),
])
def test_sqs_entry_problem_names_what_sqs_would_refuse(body, attributes, problem):
    assert sqs_entry_problem(body, attributes) == problem
