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

from .envelope import SQS_REFUSED

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
    if body.count(b"[") + body.count(b"{") <= MAX_EVENT_DEPTH:
        return MAX_EVENT_DEPTH   # not that many brackets in all: no need to look closer
    if b"\\" in body:   # escapes that hide a quote out (left to right, as a parser pairs backslashes)
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Quotes and brackets only. A "" is an empty string, or two strings side by side, whose contents merge
    # (both are inside strings): taking it out leaves every other quote opening or closing a string.
    outside = body.translate(None, _NOT_SYNTAX).replace(b'""', b"")
    if b'"' in outside:   # some strings hold brackets: out with them
        outside = _STRING.sub(b"", outside)
    shape = outside.translate(_SQUARE)
    if _WITHIN_EVENT.fullmatch(shape):
        return MAX_EVENT_DEPTH
    return MAX_BODY_DEPTH if _WITHIN_BODY.fullmatch(shape) else None


def _walk(value: Any):
    """(path, item) for ``value`` and everything in it (object keys too, at their object's path), without
    recursion: ``path`` is a tuple of keys and indexes. The depth of an array or object is ``len(path) + 1``."""
    stack: list[tuple[tuple[Any, ...], Any]] = [((), value)]
    while stack:
        path, item = stack.pop()
        yield path, item
        if type(item) is dict:
            for key, child in item.items():
                yield path, key
                stack.append(((*path, key), child))
        elif type(item) is list:
            stack.extend(((*path, i), child) for i, child in enumerate(item))


def event_depth(value: Any) -> int:
    return max((len(path) + 1 for path, item in _walk(value) if type(item) in (dict, list)), default=0)


def _not_text(value: Any) -> str | None:
    """Why ``value`` cannot be queued as text, naming where: a lone surrogate (JSON's ``\\ud800`` escapes,
    which no UTF-8 encoder can write), or a number beyond a double's range (1e400 reads as inf and would be
    written as Infinity; an integer of thousands of digits is more than the json module reads back)."""
    for path, item in _walk(value):
        if type(item) is str and (found := _SURROGATE.search(item)):
            return f"{_where(path)}: the text {_excerpt(item)} holds a lone surrogate ({found[0]!a}), not Unicode text"
        if (type(item) is float and not math.isfinite(item)) or (type(item) is int and item.bit_length() > 1024):
            return f"{_where(path)}: a number beyond the range of a double (such as 1e400)"
    return None


def _where(path: tuple[Any, ...]) -> str:
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


# A number that may overflow a double has an exponent of 3 digits or more, or 309 digits in a row: seen in
# the body with digits as "0", e/E as "e", "+" kept and the rest as spaces (one C pass, then substring
# searches). A gate only: a match (also one inside a string) sends the events to the exact check.
_NUMBER_SHAPE = bytes(48 if b in b"0123456789" else 101 if b in b"eE" else b if b == 43 else 32 for b in range(256))
_DIGITS_309 = b"0" * 309


def _maybe_huge_number(body: bytes) -> bool:
    shape = body.translate(_NUMBER_SHAPE)
    return shape.find(b"e000") >= 0 or shape.find(b"e+000") >= 0 or shape.find(_DIGITS_309) >= 0


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
            data = json.loads(text, parse_constant=_constant)   # 1e400 reads as inf: checked below
        except RecursionError:   # broken JSON nested past what nesting_limit could pair up: too deep anyway
            raise _too_deep() from None
        except ValueError as exc:
            raise BodyError("invalid_json", f"the body is not valid JSON: {exc}") from None
        fast = False
    if within is None:   # it parsed, so its brackets balance: it is too deep
        raise _too_deep()
    suspect = not fast or _maybe_huge_number(body)   # a lone surrogate, or maybe a 1e400
    if isinstance(data, dict) and isinstance(data.get("batch"), list):
        events = data["batch"]
    elif isinstance(data, list):
        events = data
    elif isinstance(data, dict):
        if within > MAX_EVENT_DEPTH and (depth := event_depth(data)) > MAX_EVENT_DEPTH:
            raise BodyError("too_deep", f"the event nests {depth} levels of arrays and objects; the limit is "
                                        f"{MAX_EVENT_DEPTH}")
        if suspect and (reason := _not_text(data)):
            raise BodyError("invalid_characters" if "surrogate" in reason else "invalid_json", reason)
        # Read by pydantic-core, the body is UTF-8 JSON: its text less JSON's whitespace is the object's.
        return [data], body.decode().strip(" \t\n\r") if fast else None
    else:
        raise BodyError("invalid_body", "the body must be a JSON object, an array of events or {\"batch\": [...]}")
    if not events:
        raise BodyError("empty_batch", "the batch holds no events")
    if len(events) > MAX_EVENTS_PER_REQUEST:
        raise BodyError("too_many_events", f"the body holds {len(events)} events; the limit is "
                                           f"{MAX_EVENTS_PER_REQUEST} per request", status=413)
    if within > MAX_EVENT_DEPTH or suspect:   # rare: look at each event
        events = [_refused_or_event(raw) for raw in events]
    return events, None


def _too_deep() -> BodyError:
    return BodyError("too_deep", f"the body nests more than {MAX_BODY_DEPTH} levels of arrays and objects; "
                                 f"the limit is {MAX_EVENT_DEPTH} per event")


def _refused_or_event(raw: Any) -> Any:
    if type(raw) not in (dict, list):
        return raw
    depth = event_depth(raw)
    if depth > MAX_EVENT_DEPTH:
        return Refused(raw, f"the event nests {depth} levels of arrays and objects; the limit is {MAX_EVENT_DEPTH}")
    reason = _not_text(raw)
    return Refused(raw, reason) if reason else raw


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
    if not raw.get("messageId"):
        # Derived from the content, so a redelivery of the same event gets the same id (idempotency).
        raw = {**raw, "messageId": derived_message_id(raw)}
    return raw


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
