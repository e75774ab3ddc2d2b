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


class BodyError(ValueError):
    """The body as a whole is unusable (not JSON, not an object or array, empty batch)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def split_body(body: bytes) -> list[Any]:
    """Parse a request body into its list of raw events (not yet validated)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BodyError("invalid_json", f"the body is not valid JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("batch"), list):
        events = data["batch"]
    elif isinstance(data, list):
        events = data
    elif isinstance(data, dict):
        return [data]
    else:
        raise BodyError("invalid_body", "the body must be a JSON object, an array of events or {\"batch\": [...]}")
    if not events:
        raise BodyError("empty_batch", "the batch holds no events")
    return events


def validate_event(raw: Any) -> dict[str, Any]:
    """Check one raw event against the Segment spec; return it with a messageId. Raises ValueError."""
    if not isinstance(raw, dict):
        raise ValueError(f"an event must be a JSON object, not {type(raw).__name__}")
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
