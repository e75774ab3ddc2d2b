"""Segment events: body shapes, the Segment spec rules and the derived messageId (events.py)."""

from __future__ import annotations

import json
import math
import tracemalloc

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic_core import from_json
from segment_qualtrics.segment.events import (
    EVENT_TYPES,
    MAX_BODY_DEPTH,
    MAX_EVENT_DEPTH,
    BodyError,
    derived_message_id,
    first_problem,
    nesting_limit,
    read_body,
    split_body,
    validate_event,
)

IDENTIFY = {"type": "identify", "messageId": "m-1", "userId": "user-1", "traits": {"email": "ada@example.com"}}
TRACK = {"type": "track", "messageId": "m-2", "event": "Transaction Created", "anonymousId": "anon-1"}


def body(value) -> bytes:
    return json.dumps(value).encode()


def invalid_reason(raw) -> str:
    with pytest.raises(ValueError) as caught:
        validate_event(raw)
    return str(caught.value)


# --- body shapes ----------------------------------------------------------------------------------

def test_a_single_event_object_is_a_list_of_one():
    assert split_body(body(IDENTIFY)) == [IDENTIFY]


def test_a_json_array_is_a_list_of_its_events():
    assert split_body(body([IDENTIFY, TRACK])) == [IDENTIFY, TRACK]


def test_the_tracking_api_batch_shape_is_unwrapped():
    assert split_body(body({"batch": [IDENTIFY, TRACK], "sentAt": "2024-01-01T00:00:00Z"})) == [IDENTIFY, TRACK]


def test_array_elements_are_not_validated_by_split_body():
    # Each event is validated on its own later, so one bad element does not sink the others here.
    assert split_body(body([IDENTIFY, 3, "x"])) == [IDENTIFY, 3, "x"]


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"not json", "invalid_json"),
        (b'{"type": "identify",', "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b"", "invalid_json"),
        (b"5", "invalid_body"),
        (b'"identify"', "invalid_body"),
        (b"null", "invalid_body"),
        (b"true", "invalid_body"),
        (b"[]", "empty_batch"),
        (b'{"batch": []}', "empty_batch"),
    ],
)
def test_unusable_bodies_are_a_body_error_with_a_code(raw, code):
    with pytest.raises(BodyError) as caught:
        split_body(raw)
    assert caught.value.code == code
    assert caught.value.message == str(caught.value)


def test_body_error_messages_say_what_is_wrong():
    with pytest.raises(BodyError) as not_json:
        split_body(b"{oops")
    assert "not valid JSON" in not_json.value.message
    with pytest.raises(BodyError) as number:
        split_body(b"42")
    assert "JSON object" in number.value.message and "batch" in number.value.message
    with pytest.raises(BodyError) as empty:
        split_body(b"[]")
    assert "no events" in empty.value.message


# --- the Segment spec -----------------------------------------------------------------------------

@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_segment_type_is_valid_with_its_required_fields(event_type):
    raw = {"type": event_type, "userId": "user-1", "messageId": f"m-{event_type}"}
    raw |= {"track": {"event": "Clicked"}, "group": {"groupId": "g-1"}, "alias": {"previousId": "old-1"}}.get(
        event_type, {})
    assert validate_event(raw) == raw


def test_the_delete_notification_is_a_valid_event():
    raw = {"type": "delete", "userId": "user-1", "timestamp": "2024-01-01T00:00:00Z", "messageId": "del-1"}
    assert validate_event(raw)["type"] == "delete"


def test_an_unknown_type_is_named_with_the_allowed_ones():
    reason = invalid_reason({"type": "purchase", "userId": "user-1"})
    assert reason.startswith("type: ")
    assert "'purchase'" in reason
    for event_type in EVENT_TYPES:
        assert event_type in reason


def test_an_event_without_a_type_says_so():
    assert invalid_reason({"userId": "user-1"}) == "type: the event has no type"


def test_a_track_without_an_event_name_is_invalid():
    assert invalid_reason({"type": "track", "userId": "user-1"}) == 'a track event needs an "event" name'
    assert "event" in invalid_reason({"type": "track", "userId": "user-1", "event": ""})


def test_an_event_needs_a_user_id_or_an_anonymous_id():
    reason = invalid_reason({"type": "identify", "traits": {}})
    assert "userId" in reason and "anonymousId" in reason


def test_null_ids_as_segment_sends_them_count_as_absent():
    assert validate_event({"type": "identify", "userId": "user-1", "anonymousId": None})["userId"] == "user-1"
    assert validate_event({"type": "identify", "userId": None, "anonymousId": "anon-1"})["anonymousId"] == "anon-1"
    reason = invalid_reason({"type": "identify", "userId": None, "anonymousId": None})
    assert "userId" in reason and "anonymousId" in reason


def test_empty_string_ids_count_as_absent():
    assert "userId" in invalid_reason({"type": "identify", "userId": "", "anonymousId": ""})


@pytest.mark.parametrize("user_id", [123, 0, 1.5])
def test_numeric_user_ids_are_accepted(user_id):
    raw = {"type": "identify", "userId": user_id}
    assert validate_event(raw)["userId"] == user_id   # the raw event is kept as it came


def test_a_boolean_user_id_is_not_an_id():
    assert invalid_reason({"type": "identify", "userId": True}).startswith("userId: ")


def test_empty_integrations_and_extra_fields_are_fine():
    raw = {"type": "identify", "userId": "u", "integrations": {}, "version": 2, "_metadata": {"bundled": []}}
    out = validate_event(raw)
    assert out["integrations"] == {} and out["version"] == 2 and out["_metadata"] == {"bundled": []}


@pytest.mark.parametrize(
    "timestamp",
    [
        "2024-01-02T03:04:05+00:00",
        "2024-01-02T03:04:05.678+00:00",
        "2024-01-02T03:04:05Z",
        "2024-01-02T03:04:05.678Z",
        "2024-01-02T03:04:05.678901Z",
        "2024-01-02T05:04:05+02:00",
    ],
)
def test_segment_timestamp_forms_are_valid(timestamp):
    raw = {"type": "identify", "userId": "u", "timestamp": timestamp, "sentAt": timestamp,
           "originalTimestamp": timestamp, "receivedAt": timestamp}
    assert validate_event(raw)["timestamp"] == timestamp   # kept as text, not re-rendered


@pytest.mark.parametrize("field", ["timestamp", "sentAt", "originalTimestamp", "receivedAt"])
def test_a_bad_timestamp_names_its_field(field):
    assert invalid_reason({"type": "identify", "userId": "u", field: "yesterday"}).startswith(f"{field}: ")


def test_group_needs_a_group_id():
    assert invalid_reason({"type": "group", "userId": "u"}) == "a group event needs a groupId"
    assert validate_event({"type": "group", "userId": "u", "groupId": 42})["groupId"] == 42


def test_alias_needs_a_previous_id():
    assert invalid_reason({"type": "alias", "userId": "u"}) == "an alias event needs a previousId"
    assert validate_event({"type": "alias", "userId": "u", "previousId": "anon-1"})["previousId"] == "anon-1"


@pytest.mark.parametrize("field", ["properties", "traits", "context", "integrations"])
def test_object_fields_must_be_objects(field):
    assert invalid_reason({"type": "identify", "userId": "u", field: "text"}).startswith(f"{field}: ")


@pytest.mark.parametrize("field", ["properties", "traits", "context"])
def test_object_fields_may_be_null(field):
    assert validate_event({"type": "identify", "userId": "u", field: None})[field] is None


@pytest.mark.parametrize("raw", [[IDENTIFY], "identify", 3, None])
def test_an_event_must_be_an_object(raw):
    assert invalid_reason(raw).startswith("an event must be a JSON object, not ")


def test_several_problems_are_all_reported_readably():
    reason = invalid_reason({"type": "identify", "userId": "u", "traits": [], "timestamp": "soon"})
    assert "traits: " in reason and "timestamp: " in reason
    assert "pydantic" not in reason and "https://" not in reason


# --- messageId ------------------------------------------------------------------------------------

def test_a_given_message_id_is_kept():
    assert validate_event(dict(IDENTIFY))["messageId"] == "m-1"


def test_a_missing_or_null_message_id_is_derived():
    raw = {"type": "identify", "userId": "u"}
    derived = validate_event(raw)["messageId"]
    assert derived.startswith("derived-")
    for absent in (None, ""):
        again = validate_event({**raw, "messageId": absent})["messageId"]
        assert again.startswith("derived-")
        assert validate_event({**raw, "messageId": absent})["messageId"] == again


def test_validate_event_does_not_change_its_input():
    raw = {"type": "identify", "userId": "u"}
    validate_event(raw)
    assert "messageId" not in raw


def test_the_derived_message_id_is_deterministic_and_ignores_key_order():
    one = {"type": "track", "userId": "u", "event": "E", "properties": {"a": 1, "b": 2}}
    same = {"properties": {"b": 2, "a": 1}, "event": "E", "userId": "u", "type": "track"}
    assert derived_message_id(one) == derived_message_id(same)
    assert validate_event(one)["messageId"] == validate_event(same)["messageId"]


def test_the_derived_message_id_depends_on_the_content():
    one = {"type": "track", "userId": "u", "event": "E", "properties": {"a": 1}}
    assert derived_message_id(one) != derived_message_id({**one, "properties": {"a": 2}})
    assert derived_message_id(one) != derived_message_id({**one, "userId": "v"})


# --- nesting, read from the bytes -------------------------------------------------------------------

def _reference_depth(body: bytes) -> int:
    """The deepest running count of open brackets outside strings, byte by byte (slow and plain)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b"]}":
            depth -= 1
    return deepest


_PIECES = st.sampled_from([b"[", b"]", b"{", b"}", b'"', b"\\", b'\\"', b"\\\\", b'"[', b']"', b'"\\"', b"1", b","])


@settings(max_examples=400, deadline=None)
@given(st.lists(_PIECES, max_size=40), st.integers(0, MAX_BODY_DEPTH + 3))
def test_nesting_limit_agrees_with_a_byte_by_byte_count(pieces, depth):
    body = b"[" * depth + b"".join(pieces) + b"]" * depth
    limit = nesting_limit(body)
    try:
        json.loads(body)
    except RecursionError:
        pass
    except ValueError:   # not JSON: read_body refuses it, and no parser gets to recurse past the limit
        with pytest.raises(BodyError):
            split_body(body)
        return
    reference = _reference_depth(body)   # valid JSON: exact
    assert limit == (MAX_EVENT_DEPTH if reference <= MAX_EVENT_DEPTH else
                     MAX_BODY_DEPTH if reference <= MAX_BODY_DEPTH else None)


@pytest.mark.parametrize("body,limit", [
    (b"[" * MAX_EVENT_DEPTH + b"]" * MAX_EVENT_DEPTH, MAX_EVENT_DEPTH),
    (b"[" * MAX_BODY_DEPTH + b"]" * MAX_BODY_DEPTH, MAX_BODY_DEPTH),
    (b"[" * (MAX_BODY_DEPTH + 1) + b"]" * (MAX_BODY_DEPTH + 1), None),
    (b"[" * 1_000_000 + b"]" * 1_000_000, None),
    (b'["' + b"[" * 100 + b'"]', MAX_EVENT_DEPTH),                 # brackets in a string do not count
    (b'["\\"' + b"[" * 100 + b'"]', MAX_EVENT_DEPTH),              # nor after an escaped quote
    (b'["\\\\"' + b",[" * 70 + b"]" * 70 + b"]", None),          # an escaped backslash ends no string
    (b"{}" * 1000, MAX_EVENT_DEPTH),                                # many, none deep
    (b'[{"a":' * 40 + b"1" + b"}]" * 40, None),                   # 80 levels, objects and arrays mixed
])
def test_nesting_limit(body, limit):
    assert nesting_limit(body) == limit


def test_a_deep_body_is_too_deep_before_any_parser_recurses():
    with pytest.raises(BodyError) as caught:
        split_body(b"\xef\xbb\xbf" + b"[" * 100_000 + b"]" * 100_000)   # a BOM: json.loads would read it
    assert caught.value.code == "too_deep"


# --- what the per-event checks cost: memory in proportion to the body, not to its items ---------------

def _deep(levels: int, inside: str) -> str:
    return "[" * levels + inside + "]" * levels


_ITEMS = ",".join(["0"] * 100_000)   # 100,000 items 60 levels down: a path per item would be 60 keys each
_COSTLY_SHAPES = {
    # "e" + 3 digits in a string: the bytes' number gate fires, but no number is at fault
    "a gate that fires": '{"type":"identify","userId":"u","traits":{"note":"code e2024","x":ITEMS}}',
    # a real 1e999 after all of them: the event is walked to name where
    "a number at fault": '{"type":"identify","userId":"u","traits":{"x":ITEMS,"n":1e999}}',
    # one 65-level event in a batch: every event is checked
    "a deep event in a batch": '[{"type":"identify","userId":"u","traits":{"x":ITEMS}},'
                               '{"type":"identify","userId":"u","traits":{"d":DEEP}}]',
    # a lone surrogate (json.loads reads the body): each event is looked at
    "a lone surrogate": '[{"type":"identify","userId":"u","traits":{"x":ITEMS,"s":"\\ud800"}}]',
    # many tiny strings, with the gate firing: taking the strings out must not make an object per string
    "many strings": '{"type":"identify","userId":"u","traits":{"note":"code e2024","l":STRINGS}}',
    # many strings holding brackets: the nesting count takes them out too
    "strings of brackets": '{"type":"identify","userId":"u","traits":{"l":[' + ",".join(['["["]'] * 100_000) + ']}}',
}
_COSTLY_SHAPES = {name: text.replace("ITEMS", _deep(60, _ITEMS)).replace("DEEP", _deep(63, "1"))
                  .replace("STRINGS", "[" + ",".join(['""'] * 200_000) + "]")
                  for name, text in _COSTLY_SHAPES.items()}


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        try:
            fn()
        except (BodyError, ValueError):
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("shape", _COSTLY_SHAPES)
def test_checking_a_body_costs_memory_in_proportion_to_its_size_not_to_its_items(shape):
    """The checks (on top of parsing) stay under 4x the body, whatever its shape: no per-item allocation (a path
    tuple per item took over 300x the body). bench/linear_inputs.py prints the time."""
    data = _COSTLY_SHAPES[shape].encode()
    parsing = max(_peak(lambda: json.loads(data)), _peak(lambda: from_json(data)))
    assert _peak(lambda: read_body(data)) < parsing + 4 * len(data)


def test_what_the_costly_shapes_get():
    assert read_body(_COSTLY_SHAPES["a gate that fires"].encode())[1] is not None   # accepted as sent
    with pytest.raises(BodyError) as caught:
        read_body(_COSTLY_SHAPES["a number at fault"].encode())
    assert (caught.value.code, caught.value.message.split(":")[0]) == ("invalid_json", "traits.n")
    first, deep = read_body(_COSTLY_SHAPES["a deep event in a batch"].encode())[0]
    assert first["userId"] == "u" and "levels" in str(_reason(deep))
    (lone,) = read_body(_COSTLY_SHAPES["a lone surrogate"].encode())[0]
    assert "traits.s" in _reason(lone) and "surrogate" in _reason(lone)


def _reason(raw) -> str:
    with pytest.raises(ValueError) as caught:
        validate_event(raw, from_json=True)
    return str(caught.value)


def test_first_problem_names_the_path_of_what_breaks_a_rule():
    assert first_problem({"a": [1, {"b": [0, 1e999]}]}) == (
        "invalid_json", "a.1.b.1: a number beyond the range of a double (such as 1e400)")
    assert first_problem({"a": ["x", {"\ud800": 1}]})[1].startswith("a.1: ")   # a key: its object's path
    assert first_problem({"a": {"\ud800": {"b": [1]}}})[1].startswith("a: ")   # also when it holds more
    assert first_problem({"a": [0] * 10 + [-(10**400)]})[1].startswith("a.10: ")
    assert first_problem({"a": [None, 1.5, True, 10**300, "x"]}) is None
    assert first_problem(json.loads(_deep(MAX_EVENT_DEPTH - 1, "1").join(["{\"a\":", "}"]))) is None
    assert first_problem(json.loads(_deep(MAX_EVENT_DEPTH, "1").join(["{\"a\":", "}"])))[0] == "too_deep"


# --- numbers: any spelling reads as a finite double, or the event is refused --------------------------

def _strict(text: str):
    def refuse(name):
        raise AssertionError(f"{name} in a queued message")

    def finite(number: str) -> float:
        assert math.isfinite(float(number)), number
        return float(number)
    return json.loads(text, parse_constant=refuse, parse_float=finite, parse_int=finite)


_DIGITS = st.text("0123456789", min_size=1, max_size=40) | st.integers(150, 420).flatmap(
    lambda n: st.text("0123456789", min_size=n, max_size=n))


@st.composite
def number_spellings(draw) -> str:
    """JSON numbers: a sign, an integer part (no leading zero, as JSON wants), maybe a fraction, maybe an
    exponent (e or E, a sign, leading zeros), of any length around where a double runs out."""
    integer = draw(st.just("0") | _DIGITS.map(lambda d: "1" + d if d[0] == "0" else d))
    fraction = draw(st.none() | _DIGITS)
    exponent = draw(st.none() | st.tuples(st.sampled_from("eE"), st.sampled_from(["", "+", "-"]),
                                          st.text("0", max_size=3), st.integers(0, 700)))
    text = draw(st.sampled_from(["", "-"])) + integer + (f".{fraction}" if fraction is not None else "")
    if exponent:
        letter, sign, zeros, power = exponent
        text += f"{letter}{sign}{zeros}{power}"
    return text


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(number_spellings(), st.sampled_from(["one event", "array", "batch object"]), st.booleans())
@example("1" + "0" * 300 + "e9", "one event", False)   # the review's cases: 1e309 with no 3-digit exponent
@example("1" + "0" * 300 + "e9", "array", False)
@example("9" * 300 + ".9e99", "one event", True)
@example("9" * 308 + "." + "9" * 308 + "e9", "one event", False)
@example("0." + "0" * 400 + "1e0400", "one event", False)   # tiny after all: finite
@example("-17976931348623159" + "0" * 292, "array", False)   # just past the largest double
@example("17976931348623157" + "0" * 292, "array", False)   # the largest double: finite
def test_a_number_is_queued_only_when_it_reads_as_a_finite_double(number, shape, in_a_string_too):
    from tests.unit.test_ingest import FakePublisher, ingest, signed
    note = f',"note":"code e2024 {number}"' if in_a_string_too else ""   # the same text in a string: no matter
    event = f'{{"type":"identify","messageId":"m-n","userId":"u","traits":{{"n":{number}{note}}}}}'
    raw = {"one event": event, "array": f"[{event}]", "batch object": f'{{"batch":[{event}]}}'}[shape]
    publisher = FakePublisher()
    response = ingest(signed(None, raw=raw.encode()), publisher)
    queued = [m for _, messages in publisher.calls for m in messages]
    if math.isfinite(float(number)):
        assert response.status == 200 and queued, response.body
        for message in queued:
            event = _strict(message.to_json())["event"]
            assert event["traits"]["n"] == float(number)   # read back as a double, the same one
    else:
        assert response.status == 400 and not queued, response.body
        assert "beyond the range of a double" in json.dumps(response.body)


@pytest.mark.parametrize("digits", [4300, 4301, 10_000])
def test_an_integer_too_long_for_python_refuses_its_event_alone(digits):
    """Over 4,300 digits Python will not convert an integer (a ValueError for the whole body): read as beyond a
    double, only its own event is refused and the rest of the batch goes on."""
    body = ('[{"type":"identify","messageId":"m","userId":"u","traits":{"n":%s}},'
            '{"type":"identify","messageId":"m2","userId":"u"}]' % ("1" * digits)).encode()
    big, fine = read_body(body)[0]
    assert "traits.n" in _reason(big) and "beyond the range of a double" in _reason(big)
    assert validate_event(fine, from_json=True)["messageId"] == "m2"
