"""Segment events: the body shapes Segment delivers and a pydantic model of the Segment spec.

A body holds one event object, a JSON array of events (Webhooks (Actions) batches) or
``{"batch": [...]}`` (the tracking API's batch shape). Each event is validated on its own, so one
bad event in a batch does not reject the others.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator
from pydantic_core import SchemaValidator, core_schema
from pydantic_core import from_json as _fast_loads

from segment_qualtrics.segment.charset import SQS_REFUSED

EVENT_TYPES = ("identify", "track", "page", "screen", "group", "alias", "delete")


class SegmentEvent(BaseModel):
    """The fields of a Segment event that we check. Everything else is kept as it came (raw dict)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["identify", "track", "page", "screen", "group", "alias", "delete"]
    messageId: str | None = None
    userId: str | None = None
    anonymousId: str | None = None
    event: str | None = None
    groupId: str | None = None
    previousId: str | None = None
    timestamp: datetime | None = None
    originalTimestamp: datetime | None = None
    sentAt: datetime | None = None
    receivedAt: datetime | None = None
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None

    @field_validator("userId", "anonymousId", "groupId", "previousId", mode="before")
    @classmethod
    def _ids_as_text(cls, value: Any) -> Any:
        # Segment's libraries accept numeric ids and send them as numbers in some sources.
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("messageId")
    @classmethod
    def _queueable_id(cls, value: str | None) -> str | None:
        if value and (problem := message_id_problem(value)):
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _spec_rules(self) -> SegmentEvent:
        if not (self.userId or self.anonymousId):
            raise ValueError("an event needs a userId or an anonymousId")
        if self.type == "track" and not self.event:
            raise ValueError('a track event needs an "event" name')
        if self.type == "group" and not self.groupId:
            raise ValueError("a group event needs a groupId")
        if self.type == "alias" and not self.previousId:
            raise ValueError("an alias event needs a previousId")
        return self


# --- the fast path -------------------------------------------------------------------------------
# Building the pydantic model costs about as much CPU as parsing the event's JSON (its spec rules and id
# coercion are Python validators, and it builds datetimes and copies every object). Most events are
# plainly valid, so they are recognised by the checks below, which accept a subset of what SegmentEvent
# accepts, for about two thirds of that cost; anything else (an error, or a rarer form such as a numeric
# id or an epoch timestamp) goes to the model, which decides and words the error. So the rules and
# messages stay the model's (tests/unit/test_hot_path.py checks the subset property).

_TYPES = frozenset(EVENT_TYPES)
_TEXT_FIELDS = ("messageId", "userId", "anonymousId", "event", "groupId", "previousId")
_TIME_FIELDS = ("timestamp", "originalTimestamp", "sentAt", "receivedAt")
_OBJECT_FIELDS = ("properties", "traits", "context", "integrations")
# A time field's check is the model's own: pydantic-core's datetime validator (speedate, in Rust), the
# rule of a ``datetime`` field, in a third of the time of a regex and datetime.fromisoformat.
_valid_time = SchemaValidator(core_schema.datetime_schema()).validate_python
_REQUIRED_BY_TYPE = {"track": "event", "group": "groupId", "alias": "previousId"}


def plainly_valid(raw: dict[str, Any], *, from_json: bool = False) -> bool:
    """True when SegmentEvent surely accepts ``raw``; False when unsure (the model then decides).

    ``from_json``: ``raw`` was parsed from JSON, so the keys of its objects are strings already.
    """
    get = raw.get
    kind = get("type")
    if type(kind) is not str or kind not in _TYPES:
        return False
    for name in _TEXT_FIELDS:
        value = get(name)
        if value is not None and type(value) is not str:
            return False
    message_id = get("messageId")
    if message_id and not (message_id.isprintable() and len(message_id) <= MAX_MESSAGE_ID_CHARS):
        return False
    for name in _TIME_FIELDS:
        value = get(name)
        if value is None:
            continue
        if type(value) is not str:   # epoch numbers and the rest: the model decides
            return False
        try:
            _valid_time(value)
        except ValidationError:
            return False
    for name in _OBJECT_FIELDS:
        value = get(name)
        if value is not None and not (type(value) is dict and (from_json or _has_text_keys(value))):
            return False
    required = _REQUIRED_BY_TYPE.get(kind)
    return bool((get("userId") or get("anonymousId")) and (required is None or get(required)))


def _has_text_keys(obj: dict[Any, Any]) -> bool:
    """Every key is a str (always so in parsed JSON): ``str.join`` checks that in C."""
    try:
        "".join(obj)
    except TypeError:
        return False
    return True


# --- what the ingest refuses (docs/error-model.md, "Input the ingest refuses") -----------------------
# Segment's events are shallow (context.page, properties.products[].x: 3 or 4 levels). The limit keeps
# every walker of event data (the mapping, the workers, the json module) far from Python's recursion
# limit, and the parsers from recursing on a hostile body at all.
MAX_EVENT_DEPTH = 64
# A body adds at most two levels around its events: ``[...]`` or ``{"batch": [...]}``.
MAX_BODY_DEPTH = MAX_EVENT_DEPTH + 2
# Segment's batches hold at most 2,500 (tracking API) or 4,000 (Webhooks (Actions) batch_size) events.
MAX_EVENTS_PER_REQUEST = 5000
# Segment's messageIds are about 40 characters (a UUID, "ajs-next-" and 32 hex digits). The limit keeps
# the id readable in the queue's message attributes and the logs.
MAX_MESSAGE_ID_CHARS = 1024

_SURROGATE = re.compile("[\ud800-\udfff]")


class BodyError(ValueError):
    """The body as a whole is unusable (not JSON, not an object or array, empty batch)."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class Refused:
    """An event of a batch that read_body refused (too deep, a lone surrogate): validate_event rejects it
    with ``reason``. Only in batches: a body that is one such event is a BodyError."""

    __slots__ = ("message_id", "reason")

    def __init__(self, raw: Any, reason: str) -> None:
        message_id = raw.get("messageId") if isinstance(raw, dict) else None
        self.message_id = message_id if isinstance(message_id, str) else None
        self.reason = reason


# --- nesting, checked on the bytes in linear time ---------------------------------------------------
_STRING = re.compile(rb'"[^"]*"')
_STRINGS_CHUNK = 16 * 1024   # re.sub on a chunk of tiny strings peaks at about 60x the chunk: 1 MB


def _without_strings(data: bytes) -> bytes:
    """JSON bytes (escapes already out) less their strings. re.sub makes one object per string it keeps text
    between, so a body of a million tiny strings would take 60 times its size at once: a chunk at a time,
    each cut where no string is open, keeps that to a chunk's worth."""
    if b'"' not in data:
        return data
    if len(data) <= _STRINGS_CHUNK:
        return _STRING.sub(b"", data)
    pieces, start = [], 0
    while start < len(data):
        cut = min(start + _STRINGS_CHUNK, len(data))
        if data.count(b'"', start, cut) % 2:   # a string open at the cut: cut after its closing quote
            close = data.find(b'"', cut)
            cut = len(data) if close < 0 else close + 1
        pieces.append(_STRING.sub(b"", data[start:cut]))
        start = cut
    return b"".join(pieces)
_NOT_SYNTAX = bytes(b for b in range(256) if b not in b'[]{}"')
_SQUARE = bytes.maketrans(b"{}", b"[]")


def _balanced_within(depth: int) -> re.Pattern[bytes]:
    """Balanced brackets nested at most ``depth`` deep: a regular language. Possessive, so never backtracking:
    one pass, and a failure where the brackets go one level too deep."""
    pattern = ""
    for _ in range(depth):
        pattern = rf"(?:\[{pattern}\])*+"
    return re.compile(pattern.encode())


_WITHIN_EVENT = _balanced_within(MAX_EVENT_DEPTH)
_WITHIN_BODY = _balanced_within(MAX_BODY_DEPTH)


def nesting_limit(body: bytes) -> int | None:
    """MAX_EVENT_DEPTH when the body's arrays and objects nest at most that deep, else MAX_BODY_DEPTH when
    they nest at most that deep, else None (deeper, or brackets that do not balance: not JSON).

    Read from the bytes before any parser runs, in linear time (C loops: about 1 ms for a 1,000-event batch,
    0.1 s for 4 MB of brackets). Exact for UTF-8 (no byte of a multi-byte character is a bracket, a quote
    or a backslash).
    """
    if b"\\" in body:   # escapes that hide a quote out (left to right, as a parser pairs backslashes)
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    syntax = body.translate(None, _NOT_SYNTAX)   # quotes and brackets only
    if syntax.count(b"[") + syntax.count(b"{") <= MAX_EVENT_DEPTH:
        return MAX_EVENT_DEPTH   # not that many brackets in all: no need to look closer
    # A "" is an empty string, or two strings side by side, whose contents merge (both are inside strings):
    # taking it out leaves every other quote opening or closing a string.
    outside = syntax.replace(b'""', b"")
    if b'"' in outside:   # some strings hold brackets: out with them
        outside = _without_strings(outside)
    shape = outside.translate(_SQUARE)
    if _WITHIN_EVENT.fullmatch(shape):
        return MAX_EVENT_DEPTH
    return MAX_BODY_DEPTH if _WITHIN_BODY.fullmatch(shape) else None


def first_problem(value: Any) -> tuple[str, str] | None:
    """(code, message) for the first reason ``value`` cannot be queued, naming where; None when it can.

    The reasons: nesting deeper than MAX_EVENT_DEPTH (``too_deep``); a lone surrogate (JSON's ``\\ud800``
    escapes, which no UTF-8 encoder can write: ``invalid_characters``); a number that reads as an infinite
    double (1e400, an integer of 309 digits: it would be written as Infinity, and the json module reads no
    integer of more than 4,300 digits back: ``invalid_json``).

    One pass without recursion, in memory proportional to the depth, not the size: a stack of the open arrays'
    and objects' iterators (and their keys), from which the path is read only for the message. An array or
    object that holds only plain values is cleared in bulk (C loops), without a step per item.
    """
    if type(value) is not dict and type(value) is not list:
        reason = _scalar_problem(value)
        return (reason[0], f"the event: {reason[1]}") if reason else None
    if _plainly_fine(value):
        return None
    keys: list[Any] = []   # the key of each open array or object below the top one
    stack = [iter(value.items()) if type(value) is dict else enumerate(value)]
    while stack:
        for key, item in stack[-1]:
            if type(key) is str and (reason := _scalar_problem(key)):   # a key: named at its object's path
                return reason[0], f"{_where(keys)}: {reason[1]}"
            kind = type(item)
            if kind is dict or kind is list:
                if len(stack) >= MAX_EVENT_DEPTH:
                    return "too_deep", (f"{_where((*keys, key))}: the event nests arrays and objects more than "
                                        f"{MAX_EVENT_DEPTH} levels deep; the limit is {MAX_EVENT_DEPTH}")
                if not _plainly_fine(item):
                    keys.append(key)
                    stack.append(iter(item.items()) if kind is dict else enumerate(item))
                    break
            elif (kind is str or kind is float or kind is int) and (reason := _scalar_problem(item)):
                return reason[0], f"{_where((*keys, key))}: {reason[1]}"
        else:
            stack.pop()
            if keys:
                keys.pop()
    return None


_NUMBERS = frozenset({int, float, bool, type(None)})


def _plainly_fine(container: dict[Any, Any] | list[Any]) -> bool:
    """True when ``container`` holds no array or object and none of its values (or keys) breaks a rule; False
    when unsure. In C loops: the types of the items, the largest number, the text of all strings at once."""
    items = container.values() if type(container) is dict else container
    kinds = set(map(type, items))
    if type(container) is dict and _SURROGATE.search("".join(container)):   # parsed JSON: keys are str
        return False
    if kinds <= _NUMBERS:
        numbers = [x for x in items if x is not None] if type(None) in kinds else items
        return not numbers or _scalar_problem(max(map(abs, numbers))) is None
    if kinds == {str}:
        return _SURROGATE.search("".join(items)) is None
    return False


def _scalar_problem(item: Any) -> tuple[str, str] | None:
    kind = type(item)
    if kind is str:
        if found := _SURROGATE.search(item):
            return "invalid_characters", (f"the text {_excerpt(item)} holds a lone surrogate ({found[0]!a}), "
                                          "not Unicode text")
    elif (kind is float and not math.isfinite(item)) or (kind is int and item.bit_length() > 1023 and _overflows(item)):
        return "invalid_json", "a number beyond the range of a double (such as 1e400)"
    return None


def _overflows(number: int) -> bool:
    try:
        float(number)   # rounds as float() of its text does: the same rule as the check on the bytes
    except OverflowError:
        return True
    return False


def event_depth(value: Any) -> int:
    """How many levels of arrays and objects ``value`` nests (0 for a scalar). Iterative, memory ~ the depth."""
    if type(value) is not dict and type(value) is not list:
        return 0
    deepest = 1
    stack = [iter(value.values()) if type(value) is dict else iter(value)]
    while stack:
        for item in stack[-1]:
            if type(item) is dict or type(item) is list:
                stack.append(iter(item.values()) if type(item) is dict else iter(item))
                deepest = max(deepest, len(stack))
                break
        else:
            stack.pop()
    return deepest


def _where(path: tuple[Any, ...] | list[Any]) -> str:
    text = ".".join(map(str, path)) or "the event"
    return _excerpt(text)[1:-1] if len(text) > 40 or not text.isascii() else text


def _excerpt(value: Any) -> str:
    """A value for an error message: at most about 40 characters, in ASCII (escapes for the rest)."""
    if isinstance(value, str):
        return ascii(value if len(value) <= 40 else value[:40] + "...")
    text = ascii(value) if isinstance(value, int | float | bool | None) else type(value).__name__
    return text if len(text) <= 40 else text[:40] + "..."


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (strict JSON has no NaN or Infinity)")


def _integer(text: str) -> int | float:
    """An integer of the body as json.loads reads it, but one longer than Python converts (4,300 digits: a
    ValueError that would refuse the whole body) reads as inf: far beyond a double, its event alone is refused."""
    return int(text) if len(text) <= 4300 else math.inf


# A number reads as an infinite double (|x| >= 1.8e308) only if its integer digits plus its exponent make 309
# or more: so it has an exponent of 3 digits or more, or 210 integer digits in a row (JSON allows no leading
# zero). The gate looks for a 3-digit exponent or 200 digits in a row, on the body with digits as "0", e/E as
# "e" and the rest as spaces (one C pass, then substring searches): it cannot miss one. It also fires on such
# text inside a string ("code e2024"): _huge_number then looks closer, still on the bytes.
_NUMBER_SHAPE = bytes(48 if b in b"0123456789" else 101 if b in b"eE" else 32 for b in range(256))
_NUMBER_TEXT = bytes(b if b in b"0123456789eE+-." else 32 for b in range(256))   # a number's characters kept
_TOKEN_SHAPE = bytes.maketrans(b"123456789E-", b"000000000e+")   # for _huge_number: "." kept in its number
_DIGITS_200 = b"0" * 200
_HUGE_SIGNS = (b"e000", b"e+000", _DIGITS_200)


def _maybe_huge_number(body: bytes) -> bool:
    # "+" taken out: "e+308" reads "e308" (one search, not two); a "-" is a space: a negative exponent makes
    # no number large (a join taking "+" out makes may fire the gate, never hide a number from it).
    shape = body.translate(_NUMBER_SHAPE, b"+")
    return shape.find(b"e000") >= 0 or shape.find(_DIGITS_200) >= 0


def _outside_strings(body: bytes) -> bytes:
    """The JSON text ``body`` less its strings (and keys). For a body that parsed: escapes are inside strings."""
    if b"\\" in body:   # escapes that hide a quote out (left to right, as a parser pairs backslashes)
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    return _without_strings(body)


def _huge_number(body: bytes) -> bool:
    """True when a number of the (parsed) JSON ``body`` reads as an infinite double: exact, in linear time.

    Outside the strings every run of a number's characters is one number: each one the gate points at is read
    by float() (which reads a 4 MB number in about 10 ms), and the searches go on after it.
    """
    text = _outside_strings(body).translate(_NUMBER_TEXT)
    shape = text.translate(_TOKEN_SHAPE)
    hits = [shape.find(sign) for sign in _HUGE_SIGNS]
    while (found := [hit for hit in hits if hit >= 0]):
        hit = min(found)
        start = shape.rfind(b" ", 0, hit) + 1
        end = shape.find(b" ", hit)
        end = len(shape) if end < 0 else end
        try:
            if math.isinf(float(text[start:end])):
                return True
        except ValueError:   # not a number after all (cannot happen in parsed JSON): the walk decides
            return True
        hits = [hit if hit < 0 or hit >= end else shape.find(sign, end)
                for hit, sign in zip(hits, _HUGE_SIGNS, strict=True)]
    return False


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def split_body(body: bytes) -> list[Any]:
    """Parse a request body into its list of raw events (not yet validated)."""
    return read_body(body)[0]


def read_body(body: bytes) -> tuple[list[Any], str | None]:
    """``split_body``, plus the body's text when the body is one event object read by the fast parser.

    That text is the event's JSON as sent: its queue messages can carry it instead of encoding the
    event again. None for arrays and batches, and for bodies only the json module reads (a BOM, a lone
    surrogate escape).

    Refused (BodyError): nesting deeper than MAX_BODY_DEPTH (checked on the bytes before parsing, so no
    parser recurses on it), not UTF-8, not strict JSON (NaN, Infinity), more than MAX_EVENTS_PER_REQUEST
    events (413), and a one-event body nested deeper than MAX_EVENT_DEPTH, holding a lone surrogate or a
    number beyond a double's range. In a batch, such an event alone is refused: it comes back as a
    ``Refused``, which validate_event rejects.
    """
    # Before parsing: json.loads recurses (RecursionError past about 1,000 levels), pydantic-core stops at 200.
    within = nesting_limit(body)
    # pydantic-core's JSON parser (Rust, part of pydantic) takes about 0.6x the json module's time on
    # Segment batches. What it accepts, it reads as json.loads does (tests/unit/test_hot_path.py checks
    # that). It refuses a few forms json.loads takes (a UTF-8 BOM, a lone surrogate escape); those, and
    # every error, go to json.loads, which decides and words the error.
    try:
        data = _fast_loads(body, allow_inf_nan=False)
        fast = True
    except ValueError as exc:
        if within is None and "recursion limit" in str(exc):
            raise _too_deep() from None
        try:
            text = body.decode("utf-8-sig")   # RFC 8259: JSON between systems is UTF-8 (a BOM is tolerated)
        except UnicodeDecodeError as exc:
            raise BodyError("invalid_json", f"the body is not UTF-8 text: {exc}") from None
        try:
            data = json.loads(text, parse_constant=_constant, parse_int=_integer)   # 1e400 reads as inf: checked below
        except RecursionError:   # broken JSON nested past what nesting_limit could pair up: too deep anyway
            raise _too_deep() from None
        except ValueError as exc:
            raise BodyError("invalid_json", f"the body is not valid JSON: {exc}") from None
        fast = False
    if within is None:   # it parsed, so its brackets balance: it is too deep
        raise _too_deep()
    # Most bodies need no look at their events: checks on the bytes (C passes) clear them. Otherwise one pass
    # over each event (first_problem: memory ~ its depth, plain arrays and objects cleared in bulk) finds what is
    # wrong and where.
    deep = within > MAX_EVENT_DEPTH   # one event may be too deep
    suspect = (deep
               or (not fast and _SURROGATE_ESCAPE.search(body) is not None)   # maybe a lone surrogate
               or (_maybe_huge_number(body) and _huge_number(body)))   # a number that reads as inf
    if isinstance(data, dict) and isinstance(data.get("batch"), list):
        events = data["batch"]
    elif isinstance(data, list):
        events = data
    elif isinstance(data, dict):
        if deep:   # the body is the event
            raise BodyError("too_deep", _TOO_DEEP_EVENT)
        if suspect and (problem := first_problem(data)):
            raise BodyError(*problem)
        # Read by pydantic-core, the body is UTF-8 JSON: its text less JSON's whitespace is the object's.
        return [data], body.decode().strip(" \t\n\r") if fast else None
    else:
        raise BodyError("invalid_body", "the body must be a JSON object, an array of events or {\"batch\": [...]}")
    if not events:
        raise BodyError("empty_batch", "the batch holds no events")
    if len(events) > MAX_EVENTS_PER_REQUEST:
        raise BodyError("too_many_events", f"the body holds {len(events)} events; the limit is "
                                           f"{MAX_EVENTS_PER_REQUEST} per request", status=413)
    if suspect:   # rare: look at each event
        events = [_refused_or_event(raw) for raw in events]
    return events, None


_TOO_DEEP_EVENT = (f"the event nests more than {MAX_EVENT_DEPTH} levels of arrays and objects; "
                   f"the limit is {MAX_EVENT_DEPTH}")


def _too_deep() -> BodyError:
    return BodyError("too_deep", f"the body nests more than {MAX_BODY_DEPTH} levels of arrays and objects; "
                                 f"the limit is {MAX_EVENT_DEPTH} per event")


def _refused_or_event(raw: Any) -> Any:
    problem = first_problem(raw) if type(raw) is dict or type(raw) is list else None
    return Refused(raw, problem[1]) if problem else raw


def message_id_problem(message_id: str) -> str | None:
    """Why a messageId cannot be queued (it travels in an SQS message attribute), or None."""
    if len(message_id) > MAX_MESSAGE_ID_CHARS:
        return f"{len(message_id)} characters; the limit is {MAX_MESSAGE_ID_CHARS}"
    if bad := SQS_REFUSED.search(message_id):
        return f"the character {bad[0]!a} is not allowed (an SQS message attribute carries the id)"
    return None


def validate_event(raw: Any, *, from_json: bool = False) -> dict[str, Any]:
    """Check one raw event against the Segment spec; return it with a messageId. Raises ValueError.

    ``from_json=True`` says ``raw`` was parsed from JSON (as ``split_body`` does), which spares a check.
    """
    if not isinstance(raw, dict):
        if isinstance(raw, Refused):
            raise ValueError(raw.reason)
        raise ValueError(f"an event must be a JSON object, not {type(raw).__name__}")
    if not plainly_valid(raw, from_json=from_json):
        try:
            SegmentEvent.model_validate(raw)
        except ValidationError as exc:
            raise ValueError(describe_validation_error(exc)) from None
    event: dict[str, Any] = raw
    if not event.get("messageId"):
        # Derived from the content, so a redelivery of the same event gets the same id (idempotency).
        event = {**event, "messageId": derived_message_id(event)}
    return event


def derived_message_id(raw: dict[str, Any]) -> str:
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return "derived-" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


def describe_validation_error(exc: ValidationError) -> str:
    """One readable sentence per problem, naming the field: no pydantic internals."""
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "literal_error" and where == "type":
            # An excerpt, in ASCII: the answer stays small whatever the input (5,000 invalid events).
            message = f"unknown event type {_excerpt(err['input'])}; expected one of {', '.join(EVENT_TYPES)}"
        elif err["type"] == "missing" and where == "type":
            message = "the event has no type"
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)
