"""Segment events: the body shapes Segment delivers and a pydantic model of the Segment spec.

A body holds one event object, a JSON array of events (Webhooks (Actions) batches) or
``{"batch": [...]}`` (the tracking API's batch shape). Each event is validated on its own, so one
bad event in a batch does not reject the others.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator
from pydantic_core import SchemaValidator, core_schema
from pydantic_core import from_json as _fast_loads

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


class BodyError(ValueError):
    """The body as a whole is unusable (not JSON, not an object or array, empty batch)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def split_body(body: bytes) -> list[Any]:
    """Parse a request body into its list of raw events (not yet validated)."""
    return read_body(body)[0]


def read_body(body: bytes) -> tuple[list[Any], str | None]:
    """``split_body``, plus the body's text when the body is one event object read by the fast parser.

    That text is the event's JSON as sent: its queue messages can carry it instead of encoding the
    event again. None for arrays and batches, and for bodies only the json module reads (a BOM, UTF-16).
    """
    # pydantic-core's JSON parser (Rust, part of pydantic) takes about 0.6x the json module's time on
    # Segment batches. What it accepts, it reads as json.loads does (tests/unit/test_hot_path.py checks
    # that). It refuses a few forms json.loads takes (a UTF-8 BOM, a lone surrogate escape, nesting deeper
    # than 200); those, and every error, go to json.loads, which decides and words the error.
    try:
        data = _fast_loads(body)
        fast = True
    except ValueError:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BodyError("invalid_json", f"the body is not valid JSON: {exc}") from None
        fast = False
    if isinstance(data, dict) and isinstance(data.get("batch"), list):
        events = data["batch"]
    elif isinstance(data, list):
        events = data
    elif isinstance(data, dict):
        # Read by pydantic-core, the body is UTF-8 JSON: its text less JSON's whitespace is the object's.
        return [data], body.decode().strip(" \t\n\r") if fast else None
    else:
        raise BodyError("invalid_body", "the body must be a JSON object, an array of events or {\"batch\": [...]}")
    if not events:
        raise BodyError("empty_batch", "the batch holds no events")
    return events, None


def validate_event(raw: Any, *, from_json: bool = False) -> dict[str, Any]:
    """Check one raw event against the Segment spec; return it with a messageId. Raises ValueError.

    ``from_json=True`` says ``raw`` was parsed from JSON (as ``split_body`` does), which spares a check.
    """
    if not isinstance(raw, dict):
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
            message = f"unknown event type {err['input']!r}; expected one of {', '.join(EVENT_TYPES)}"
        elif err["type"] == "missing" and where == "type":
            message = "the event has no type"
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)
