"""The ingest's fast paths decide exactly as the plain ones (events.py, envelope.py, ingest.py).

- ``plainly_valid`` may only accept what the SegmentEvent model accepts; ``validate_event`` gives the
  model's answer and the model's words either way.
- ``split_body_with_text`` gives ``split_body``'s events and errors, and texts that are those events.
- ``QueueMessage.to_json`` is ``json.dumps`` of the envelope; with the event's own text, the same JSON value.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from segment_qualtrics.envelope import ENVELOPE_VERSION, QueueMessage, encode_event
from segment_qualtrics.events import (
    EVENT_TYPES,
    BodyError,
    SegmentEvent,
    derived_message_id,
    describe_validation_error,
    plainly_valid,
    split_body,
    split_body_with_text,
    validate_event,
)
from segment_qualtrics.ingest import IngestCredentials, IngestRequest, handle_ingest
from segment_qualtrics.subscriptions import parse_subscriptions

# --- events ---------------------------------------------------------------------------------------

_TIMESTAMP = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)).map(lambda d: d.isoformat()),
    st.builds(lambda d, z: d.isoformat(timespec=z[0]) + z[1],
              st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
              st.tuples(st.sampled_from(["seconds", "milliseconds", "microseconds"]),
                        st.sampled_from(["Z", "+00:00", "-07:30", "+23:59", "+24:00", "+00:60", "z", ""]))),
    st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,7})?(Z|[+-][0-9]{2}:[0-9]{2})?\Z"),
    st.text(max_size=30), st.integers(), st.floats(allow_nan=False), st.booleans(),
)
_ID = st.one_of(st.none(), st.just(""), st.text(max_size=8), st.integers(), st.floats(allow_nan=False),
                st.booleans(), st.lists(st.integers(), max_size=1))
_OBJECT = st.one_of(st.none(), st.dictionaries(st.text(max_size=4), st.integers(), max_size=3), st.text(max_size=3),
                    st.lists(st.integers(), max_size=2), st.dictionaries(st.integers(), st.integers(), max_size=2))
_FIELDS = {
    "type": st.one_of(st.sampled_from(EVENT_TYPES), st.sampled_from(["Track", "purchase", ""]), st.integers(),
                      st.none()),
    "messageId": _ID, "userId": _ID, "anonymousId": _ID, "event": _ID, "groupId": _ID, "previousId": _ID,
    "timestamp": _TIMESTAMP, "originalTimestamp": _TIMESTAMP, "sentAt": _TIMESTAMP, "receivedAt": _TIMESTAMP,
    "properties": _OBJECT, "traits": _OBJECT, "context": _OBJECT, "integrations": _OBJECT,
    "version": st.integers(), "name": st.text(max_size=5),
}
EVENTS = st.fixed_dictionaries({}, optional=_FIELDS)


def model_answer(raw):
    """What the pydantic model alone says (the code before the fast path)."""
    try:
        SegmentEvent.model_validate(raw)
    except ValidationError as exc:
        return describe_validation_error(exc)
    return None


def validate_answer(raw, **options):
    try:
        return validate_event(raw, **options)
    except ValueError as exc:
        return str(exc)


@settings(max_examples=600, deadline=None)
@given(EVENTS)
@example({"type": "identify", "userId": "u", "timestamp": "2024-02-30T00:00:00Z"})
@example({"type": "identify", "userId": "u", "timestamp": "0000-01-01T00:00:00Z"})
@example({"type": "identify", "userId": "u", "timestamp": "2024-01-01T00:00:00+00:60"})
@example({"type": "identify", "userId": "u", "traits": {1: 2}})
@example({"type": "track", "anonymousId": "a", "event": "E", "sentAt": "2024-01-01T24:00:00Z"})
def test_the_fast_path_accepts_only_what_the_model_accepts(raw):
    if plainly_valid(raw):
        assert model_answer(raw) is None


@settings(max_examples=600, deadline=None)
@given(EVENTS)
def test_validate_event_answers_as_the_model_alone(raw):
    expected_error = model_answer(raw)
    answer = validate_answer(raw)
    if expected_error is not None:
        assert answer == expected_error
    else:
        message_id = raw.get("messageId") or derived_message_id(raw)
        assert answer == {**raw, "messageId": message_id}


_JSON_EVENTS = EVENTS.filter(   # as parsed from JSON: object keys are strings
    lambda raw: all(isinstance(k, str) for v in raw.values() if isinstance(v, dict) for k in v))


@settings(max_examples=200, deadline=None)
@given(_JSON_EVENTS)
def test_from_json_answers_the_same_for_json_data(raw):
    assert validate_answer(raw, from_json=True) == validate_answer(raw)


def test_segment_events_take_the_fast_path():
    for raw in (
        {"type": "identify", "messageId": "m", "userId": "u", "anonymousId": None, "integrations": {},
         "traits": {"email": "a@example.com"}, "context": {"ip": "1.2.3.4"},
         "timestamp": "2026-11-29T09:59:58.123Z", "sentAt": "2026-11-29T09:59:58+00:00"},
        {"type": "track", "event": "Transaction Created", "anonymousId": "a", "properties": {"total": 1},
         "timestamp": "2026-11-29T10:00:00Z", "originalTimestamp": "2026-11-29T10:00:00.123456-05:00"},
    ):
        assert plainly_valid(raw) and plainly_valid(raw, from_json=True)


# --- bodies ---------------------------------------------------------------------------------------

_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
              st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=12,
)
_SPACE = st.sampled_from(["", " ", "\n", "\t", "\r\n  "])


def _loose(value, space) -> str:
    """JSON text with whitespace wherever JSON allows it, and non-ASCII kept or escaped."""
    if isinstance(value, list):
        return "[" + space + ("," + space).join(_loose(v, space) for v in value) + space + "]"
    if isinstance(value, dict):
        items = (f"{space}{json.dumps(k)}{space}:{space}{_loose(v, space)}{space}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    return json.dumps(value, ensure_ascii=bool(len(space) % 2))


def _same_as_split_body(body: bytes) -> None:
    try:
        expected = split_body(body)
    except BodyError as exc:
        with pytest.raises(BodyError) as caught:
            split_body_with_text(body)
        assert (caught.value.code, caught.value.message) == (exc.code, exc.message)
        return
    events, texts = split_body_with_text(body)
    assert events == expected and len(texts) == len(events)
    for event, text in zip(events, texts, strict=True):
        assert text is None or json.dumps(json.loads(text)) == json.dumps(event)   # NaN != NaN


@settings(max_examples=300, deadline=None)
@given(st.one_of(_JSON, st.lists(_JSON, max_size=4), st.builds(lambda b: {"batch": b}, st.lists(_JSON, max_size=3))),
       _SPACE, _SPACE)
def test_cut_bodies_are_split_body_plus_each_events_text(value, space, around):
    _same_as_split_body((around + _loose(value, space) + around).encode())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
@example(b"[1,]")
@example(b"[1 2]")
@example(b"[1] x")
@example(b"\xef\xbb\xbf[1]")
@example("[1]".encode("utf-16"))
@example(b'[{"a": "\\ud800"}]')
@example(b'["\xed\xa0\x80"]')   # an encoded lone surrogate: json.loads takes it (surrogatepass)
@example(b"[NaN, Infinity, 1e400]")
def test_any_bytes_split_as_split_body_does(body):
    _same_as_split_body(body)


@settings(max_examples=100, deadline=None)
@given(st.lists(_JSON, min_size=1, max_size=4), _SPACE)
def test_array_elements_keep_their_own_text(values, space):
    body = "[" + ",".join(space + _loose(v, space) + space for v in values) + "]"
    _, texts = split_body_with_text(body.encode())
    assert texts == [_loose(v, space) for v in values]


# --- the envelope ---------------------------------------------------------------------------------

def _dumps_envelope(message: QueueMessage) -> str:
    """The envelope as to_json wrote it before it was written piece by piece."""
    return json.dumps({"version": ENVELOPE_VERSION, "action": message.action, "subscription": message.subscription,
                       "messageId": message.message_id, "receivedAt": message.received_at, "event": message.event},
                      separators=(",", ":"), ensure_ascii=False)


@settings(max_examples=200, deadline=None)
@given(st.text(), st.text(), st.text(), st.text(), st.dictionaries(st.text(max_size=5), _JSON, max_size=4))
def test_to_json_is_the_json_dumps_of_the_envelope(action, subscription, message_id, received_at, event):
    message = QueueMessage(action, subscription, message_id, received_at, event)
    assert message.to_json() == _dumps_envelope(message)
    with_text = QueueMessage(action, subscription, message_id, received_at, event, encode_event(event))
    assert with_text.to_json() == message.to_json()
    loose = QueueMessage(action, subscription, message_id, received_at, event, _loose(event, " "))
    assert json.loads(loose.to_json()) == json.loads(message.to_json())
    if action and subscription and message_id and event:   # what from_json requires of a message
        assert QueueMessage.from_json(loose.to_json()) == message


def test_to_json_is_made_once_and_does_not_change_equality():
    message = QueueMessage("addContactToXmd", "S", "m", "t", {"type": "identify"})
    assert message.to_json() is message.to_json()
    assert message == QueueMessage("addContactToXmd", "S", "m", "t", {"type": "identify"}, '{"type": "identify"}')


# --- the ingest end to end ------------------------------------------------------------------------

SECRET = "s"
SUBSCRIPTIONS = parse_subscriptions({"subscriptions": [
    {"name": "Contacts", "actionSlug": "addContactToXmd", "trigger": 'type = "identify"',
     "mapping": {"directoryId": "POOL_1"}},
    {"name": "Every track", "actionSlug": "triggerXflowWorkflow", "trigger": 'type = "track"',
     "mapping": {"workflowUrl": "https://iad1.qualtrics.com/w"}},
]}, environ={})


class Publisher:
    def __init__(self) -> None:
        self.bodies: list[str] = []

    def publish(self, action, messages):
        self.bodies += [m.to_json() for m in messages]
        return []


@pytest.mark.parametrize("body", [
    b'{"type": "identify", "messageId": "m-1", "userId": "u", "traits": {"name": "Zo\\u00eb"}}',
    b' [ {"type":"identify","userId":"u","messageId":"m-1"} ,\n {"type":"track","event":"E","anonymousId":"a"} ] ',
    b'{"batch": [{"type": "track", "event": "E", "userId": "u", "messageId": "m-3"}]}',
])
def test_messages_carry_the_events_as_before(body):
    publisher = Publisher()
    request = IngestRequest({"content-type": "application/json",
                             "x-signature": hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()}, body)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    response = handle_ingest(request, SUBSCRIPTIONS, IngestCredentials(shared_secret=SECRET), publisher, now=now)
    assert response.status == 200 and publisher.bodies
    expected = [validate_event(e) for e in split_body(body)]
    for text in publisher.bodies:
        envelope = json.loads(text)
        assert envelope["event"] in expected
        assert envelope["messageId"] == envelope["event"]["messageId"]
        assert json.loads(_dumps_envelope(QueueMessage.from_json(text))) == envelope
