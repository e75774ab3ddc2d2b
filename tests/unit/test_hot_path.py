"""The ingest's fast paths decide exactly as the plain ones (events.py, envelope.py, ingest.py).

- ``plainly_valid`` may only accept what the SegmentEvent model accepts; ``validate_event`` gives the
  model's answer and the model's words either way.
- ``split_body`` (pydantic-core's parser first) gives the events and errors of ``json.loads`` alone, except
  what it refuses by rule: too deep, not strict JSON (NaN, Infinity, 1e400), lone surrogates, not UTF-8.
- ``encode_event`` (pydantic-core's serializer first) and ``QueueMessage.to_json`` write the JSON value of
  the event and of the envelope; the ingest's messages carry exactly ``to_json``'s text.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from datetime import UTC, datetime

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from pydantic_core import from_json
from segment_qualtrics.destination.envelope import ENVELOPE_VERSION, SQS_REFUSED, QueueMessage, encode_event
from segment_qualtrics.destination.subscriptions import parse_subscriptions
from segment_qualtrics.ingest.core import IngestCredentials, IngestRequest, Router, _messages, handle_ingest
from segment_qualtrics.segment.events import (
    EVENT_TYPES,
    MAX_EVENT_DEPTH,
    MAX_EVENTS_PER_REQUEST,
    BodyError,
    Refused,
    SegmentEvent,
    derived_message_id,
    describe_validation_error,
    plainly_valid,
    read_body,
    split_body,
    validate_event,
)

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


def _json_loads_split(body: bytes):
    """split_body as it was before pydantic-core: json.loads alone. Returns the events or (code, message)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return ("invalid_json", f"the body is not valid JSON: {exc}")
    if isinstance(data, dict) and isinstance(data.get("batch"), list):
        events = data["batch"]
    elif isinstance(data, list):
        events = data
    elif isinstance(data, dict):
        return [data]
    else:
        return ("invalid_body", "the body must be a JSON object, an array of events or {\"batch\": [...]}")
    return events if events else ("empty_batch", "the batch holds no events")


def _depth(value) -> int:
    if isinstance(value, dict | list):
        return 1 + max(map(_depth, value.values() if isinstance(value, dict) else value), default=0)
    return 0


def _not_queueable(value) -> bool:
    """What read_body refuses in what json.loads reads: NaN, Infinity, a lone surrogate, a number past a double."""
    if isinstance(value, dict):
        return any(map(_not_queueable, value)) or any(map(_not_queueable, value.values()))
    if isinstance(value, list):
        return any(map(_not_queueable, value))
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, int):
        return value.bit_length() > 1024
    return isinstance(value, str) and re.search("[\ud800-\udfff]", value) is not None


def _refused(value) -> bool:
    return _depth(value) > MAX_EVENT_DEPTH or _not_queueable(value)


def _same_as_json_loads(body: bytes) -> None:
    """read_body reads what json.loads reads, except what it refuses by its documented rules (events.py)."""
    expected = _json_loads_split(body)
    try:
        events, text = read_body(body)
    except BodyError as exc:
        if (exc.code, exc.message) == expected:
            return
        if exc.code == "too_deep":
            assert isinstance(expected, tuple) or _depth(json.loads(body)) > MAX_EVENT_DEPTH
        elif exc.code == "too_many_events":
            assert len(expected) > MAX_EVENTS_PER_REQUEST
        else:   # strict JSON, UTF-8, text: json.loads took it, or refused it in its own words
            assert exc.code in ("invalid_json", "invalid_characters")
            assert isinstance(expected, tuple) or _not_queueable(expected) or not _is_utf8_json(body)
        return
    assert not isinstance(expected, tuple), expected
    # repr, not ==: NaN != NaN, and 1 == 1.0 == True would hide a changed type.
    assert len(events) == len(expected)
    for event, reference in zip(events, expected, strict=True):
        if isinstance(event, Refused):
            assert _refused(reference)
        else:   # a number or a string is no event: validate_event rejects it whatever it holds
            assert repr(event) == repr(reference)
            assert not (isinstance(reference, dict | list) and _refused(reference))
    if text is not None:   # the body is one event object: its text is that event's JSON
        assert len(events) == 1 and type(events[0]) is dict and "batch" not in events[0]
        assert repr(json.loads(text)) == repr(events[0]) and text == text.strip()


def _is_utf8_json(body: bytes) -> bool:
    """json.loads also reads UTF-16 and UTF-32 (it guesses from the bytes); read_body takes UTF-8 only."""
    try:
        json.loads(body.decode("utf-8-sig"))
    except ValueError:   # UnicodeDecodeError too
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(st.one_of(_JSON, st.lists(_JSON, max_size=4), st.builds(lambda b: {"batch": b}, st.lists(_JSON, max_size=3))),
       _SPACE, _SPACE)
def test_bodies_parse_as_json_loads_parses_them(value, space, around):
    _same_as_json_loads((around + _loose(value, space) + around).encode())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
@example(b"[1,]")
@example(b"[1 2]")
@example(b"[1] x")
@example(b"\xef\xbb\xbf[1]")           # a UTF-8 BOM: pydantic-core refuses it, json.loads takes it
@example("[1]".encode("utf-16"))
@example(b'[{"a": "\\ud800"}]')       # a lone surrogate escape: the same
@example(b'["\xed\xa0\x80"]')        # an encoded lone surrogate
@example(b"[NaN, Infinity, -Infinity, 1e400, -0.0, 1e-400]")
@example(b'{"a": 1, "a": 2}')
@example(b"[12345678901234567890123456789, 1.0000000000000000000001, 5e-324]")
@example(b"[" * 300 + b"]" * 300)    # deeper than pydantic-core goes
@example(b'["\x01"]')
@example(b"[1]\x0c")
@example(b'{"a": 1}')
@example(b'\xef\xbb\xbf{"a": 1}')
@example('{"a": 1}'.encode("utf-16-le"))  # json.loads detects UTF-16 without a BOM: no text then
@example(b' \n{"a": "\\ud800"}\t')
def test_any_bytes_parse_as_json_loads_parses_them(body):
    _same_as_json_loads(body)


# JSON number texts as anyone may write them (many digits, big exponents), and strings with any escapes.
_NUMBER_TEXT = st.from_regex(r"\A-?(0|[1-9][0-9]{0,30})(\.[0-9]{1,30})?([eE][+-]?[0-9]{1,4})?\Z")
_STRING_TEXT = st.text(st.characters(codec=None)).map(lambda t: json.dumps(t, ensure_ascii=len(t) % 2 == 0))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_NUMBER_TEXT, _STRING_TEXT), max_size=5))
def test_numbers_and_strings_parse_as_json_loads_parses_them(texts):
    _same_as_json_loads(("[" + ",".join(texts) + "]").encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize("body", [b'{"batch": [{"a": 1}]}', b"[{}]", b'\xef\xbb\xbf{"a": 1}'])
def test_only_a_single_event_body_read_by_the_fast_parser_gives_its_text(body):
    assert read_body(body)[1] is None


def test_a_single_event_bodys_text_is_the_body_less_json_whitespace():
    assert read_body(b' \r\n{ "type": "identify",\n  "userId": "z\\u00f6" }\n\t') == (
        [{"type": "identify", "userId": "zö"}], '{ "type": "identify",\n  "userId": "z\\u00f6" }')


def test_the_fast_parser_takes_segment_batches():
    """The fallback is for rare forms: a plain Segment batch goes through pydantic-core, as split_body assumes."""
    body = json.dumps([{"type": "identify", "userId": "u", "traits": {"name": "Zoë", "score": 0.1}}] * 3).encode()
    assert from_json(body) == split_body(body)


# --- the envelope ---------------------------------------------------------------------------------

def _dumps_envelope(message: QueueMessage) -> str:
    """The envelope as to_json wrote it before it was written piece by piece."""
    return json.dumps({"version": ENVELOPE_VERSION, "action": message.action, "subscription": message.subscription,
                       "messageId": message.message_id, "receivedAt": message.received_at, "event": message.event},
                      separators=(",", ":"), ensure_ascii=False)


_ANY_JSON = st.recursive(   # with what json.loads can give: NaN, infinities, big numbers, lone surrogates
    st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=2**64), st.floats(),
              st.text(st.characters(codec=None), max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(st.characters(codec=None), max_size=5), _ANY_JSON, max_size=4))
@example({"s": "\ud800", "n": float("nan"), "i": float("inf"), "big": 10**30})
def test_encode_event_writes_the_events_json_value(event):
    text = encode_event(event)
    assert repr(json.loads(text)) == repr(event)
    outside_strings = re.sub(r'"(?:[^"\\]|\\.)*"', "", text)
    assert not re.search(r"\s", outside_strings)   # compact


@settings(max_examples=200, deadline=None)
@given(st.text(), st.text(), st.text(), st.text(), st.dictionaries(st.text(max_size=5), _JSON, max_size=4))
def test_to_json_is_the_envelope(action, subscription, message_id, received_at, event):
    message = QueueMessage(action, subscription, message_id, received_at, event)
    assert json.loads(message.to_json()) == json.loads(_dumps_envelope(message))
    assert list(json.loads(message.to_json())) == ["version", "action", "subscription", "messageId", "receivedAt",
                                                   "event"]
    if action and subscription and message_id and event:   # what from_json requires of a message
        assert QueueMessage.from_json(message.to_json()) == message


def test_to_json_is_made_once_and_does_not_change_equality():
    message = QueueMessage("addContactToXmd", "S", "m", "t", {"type": "identify"})
    assert message.to_json() is message.to_json()
    assert message == QueueMessage("addContactToXmd", "S", "m", "t", {"type": "identify"}, '{"type": "identify"}')


_VALID_EVENTS = st.fixed_dictionaries(
    {"type": st.sampled_from(["identify", "track", "page"]), "userId": st.text(min_size=1, max_size=5),
     "event": st.text(min_size=1, max_size=5)},
    optional={"messageId": st.text(max_size=5).filter(lambda t: not SQS_REFUSED.search(t)),   # else invalid
              "traits": st.dictionaries(st.text(max_size=4), _ANY_JSON, max_size=3),
              "properties": st.dictionaries(st.text(max_size=4), _ANY_JSON, max_size=3)},
)


@settings(max_examples=100, deadline=None)
@given(_VALID_EVENTS)
def test_the_ingests_messages_carry_to_jsons_text(raw):
    event = validate_event(raw, from_json=True)
    router = Router(SUBSCRIPTIONS + ANY_EVENT)
    messages = _messages(router.matching(event), event, "2026-11-30T01:02:03.000004Z")
    assert [m.subscription for m in messages] == [s.name for s in SUBSCRIPTIONS + ANY_EVENT
                                                  if s.trigger.matches(event)]
    for message in messages:
        fresh = QueueMessage(message.action, message.subscription, message.message_id, message.received_at, event)
        assert message == fresh and message.to_json() == fresh.to_json()


# --- the ingest end to end ------------------------------------------------------------------------

SECRET = "s"
SUBSCRIPTIONS = parse_subscriptions({"subscriptions": [
    {"name": "Contacts", "actionSlug": "addContactToXmd", "trigger": 'type = "identify"',
     "mapping": {"directoryId": "POOL_1"}},
    {"name": "Every track", "actionSlug": "triggerXflowWorkflow", "trigger": 'type = "track"',
     "mapping": {"workflowUrl": "https://iad1.qualtrics.com/w"}},
]}, environ={})
ANY_EVENT = parse_subscriptions({"subscriptions": [
    {"name": "Any event \"quoted\" ë", "actionSlug": "triggerXflowWorkflow", "trigger": "userId != null",
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
    b'\n{"type": "identify", "userId": "u"}\n',   # no messageId: validation derives one, so not the body's text
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


# --- the router -----------------------------------------------------------------------------------

_ATOMS = ['type = "track"', 'type = "identify"', '"page" = type', 'type in ["track", "page"]', 'type != "track"',
          'event = "A"', '"B" = event', 'event in ["A", "C"]', 'event != "A"', 'event = null', 'properties.x > 1',
          'userId != null', 'contains(event, "A")', 'lowercase(event) = "b"', 'type = "track" and event = "A"']


_TRIGGERS = st.recursive(
    st.sampled_from(_ATOMS),
    lambda inner: st.one_of(
        st.builds(lambda a, b, w: f"{a} {w} {b}", inner, inner, st.sampled_from(["and", "or"])),
        st.builds(lambda a: f"({a})", inner),
        st.builds(lambda a: f"!({a})", inner),
    ),
    max_leaves=4,
)
_ROUTED_EVENTS = st.fixed_dictionaries(
    {"type": st.sampled_from(["track", "identify", "page", "group"]), "messageId": st.just("m"),
     "userId": st.sampled_from(["u", None])},
    optional={"event": st.one_of(st.sampled_from(["A", "B", "C", "D", "a"]), st.none(), st.just(["A"])),
              "properties": st.fixed_dictionaries({}, optional={"x": st.sampled_from([0, 2, "3"])})},
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_TRIGGERS, st.booleans()), min_size=1, max_size=6), st.lists(_ROUTED_EVENTS, max_size=6))
def test_the_router_matches_as_the_triggers_do(triggers, events):
    subs = parse_subscriptions({"subscriptions": [
        {"name": f"S{i}", "enabled": enabled, "actionSlug": "triggerXflowWorkflow", "trigger": trigger,
         "mapping": {"workflowUrl": "https://iad1.qualtrics.com/w"}} for i, (trigger, enabled) in enumerate(triggers)
    ]}, environ={})
    router = Router(subs)
    for event in events:
        expected = [s.name for s in subs if s.enabled and s.trigger.matches(event)]
        assert [name for _, name, _ in router.matching(event)] == expected, (event, [s.trigger for s in subs])


def test_the_router_skips_the_triggers_of_other_types_and_names():
    subs = parse_subscriptions({"subscriptions": [
        {"name": name, "actionSlug": "triggerXflowWorkflow", "trigger": trigger,
         "mapping": {"workflowUrl": "https://iad1.qualtrics.com/w"}}
        for name, trigger in [("identify", 'type = "identify"'), ("A", 'type = "track" and event = "A"'),
                              ("A or B", 'type = "track" and event in ["A", "B"]'),
                              ("big", 'type = "track" and properties.total > 100')]
    ]}, environ={})
    router = Router(subs)
    by_name, others = router._routes["track"]
    # For "A": the A triggers need no test at all, "big" keeps its total test; other names: only "big".
    assert [(test is None, name) for test, (_, name, _) in by_name["A"]] == [(True, "A"), (True, "A or B"),
                                                                             (False, "big")]
    assert [name for _, (_, name, _) in others] == ["big"]
    assert [name for _, (_, name, _) in router._routes["identify"][1]] == ["identify"]
