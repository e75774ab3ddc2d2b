"""The queue message envelope: what the ingest puts on an action queue and a worker reads back.

A message keeps the raw Segment event and the subscription name, not the mapped payload, so a
mapping fixed after a failure applies when the dead-letter queue is redriven (docs/architecture.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic_core import to_json as _rust_to_json

ENVELOPE_VERSION = 1
# Compact, non-ASCII kept: the one JSON form of a message. Built once; ``encode`` of a str is a C call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_encode_str = json.encoder.encode_basestring   # what _ENCODER.encode calls for a str (ensure_ascii off)


def encode_event(event: dict[str, Any]) -> str:
    """An event's compact JSON text, non-ASCII kept: the ingest encodes each event once for all its messages.

    pydantic-core's serializer (Rust, part of pydantic) writes it in about a third of the json module's
    time. It refuses what UTF-8 cannot carry (a lone surrogate, which ``json.loads`` accepts as ``\\ud800``);
    the json module then writes it escaped. Either way the same JSON value.
    """
    try:
        return _rust_to_json(event).decode()
    except ValueError:
        return _ENCODER.encode(event)


def _text(value: str) -> str:
    """A JSON string literal; a hand-made message may hold another type, encoded as the json module does."""
    return _encode_str(value) if type(value) is str else _ENCODER.encode(value)


def envelope_head(action: str, subscription: str) -> str:
    """The start of a message's JSON, the same for every message of one subscription."""
    return f'{{"version":{ENVELOPE_VERSION},"action":{_text(action)},"subscription":{_text(subscription)},"messageId":'


def envelope_tail(message_id: str, received_at: str, event_json: str) -> str:
    """The rest of a message's JSON after ``envelope_head``, the same for every message of one event."""
    if type(message_id) is str and type(received_at) is str:   # as the ingest's always are: no _text calls
        return f'{_encode_str(message_id)},"receivedAt":{_encode_str(received_at)},"event":{event_json}}}'
    return f'{_text(message_id)},"receivedAt":{_text(received_at)},"event":{event_json}}}'


class EnvelopeError(ValueError):
    pass


# Not frozen: a plain slots dataclass is built in half the time, and the ingest builds one per event
# and match. Nothing changes a message once built.
@dataclass(slots=True)
class QueueMessage:
    action: str          # action slug, e.g. "addContactToXmd"
    subscription: str    # subscription name in the subscriptions file
    message_id: str      # Segment messageId
    received_at: str     # ISO time the ingest accepted the event
    event: dict[str, Any]
    # to_json's text: made once, by to_json or by the ingest as it builds the message (from pieces shared
    # by the messages of one event; see envelope_head and envelope_tail).
    json_text: str | None = field(default=None, compare=False, repr=False)

    @property
    def idempotency_key(self) -> str:
        # Segment's messageId, not the SQS one: a re-post of the same event gets a new SQS id.
        return f"{self.action}#{self.subscription}#{self.message_id}"

    def to_json(self) -> str:
        """``{"version", "action", "subscription", "messageId", "receivedAt", "event"}`` as compact JSON.

        Made once per message: the ingest's size check and the SQS adapter both ask for it.
        """
        if self.json_text is None:
            self.json_text = envelope_head(self.action, self.subscription) + envelope_tail(
                self.message_id, self.received_at, encode_event(self.event))
        return self.json_text

    def attributes(self) -> dict[str, dict[str, str]]:
        """SQS message attributes: readable in the console and by the DLQ tool without parsing bodies."""
        return {
            "action": {"DataType": "String", "StringValue": self.action},
            "subscription": {"DataType": "String", "StringValue": self.subscription},
            "segmentMessageId": {"DataType": "String", "StringValue": self.message_id},
            "eventType": {"DataType": "String", "StringValue": str(self.event.get("type", ""))},
        }

    @classmethod
    def from_json(cls, body: str) -> QueueMessage:
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise EnvelopeError(f"message body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise EnvelopeError("message body is not a JSON object")
        if data.get("version") != ENVELOPE_VERSION:
            raise EnvelopeError(f"unsupported envelope version {data.get('version')!r}")
        missing = [k for k in ("action", "subscription", "messageId", "event") if not data.get(k)]
        if missing:
            raise EnvelopeError(f"message lacks {', '.join(missing)}")
        if not isinstance(data["event"], dict):
            raise EnvelopeError("message event is not an object")
        return cls(
            action=data["action"],
            subscription=data["subscription"],
            message_id=data["messageId"],
            received_at=data.get("receivedAt", ""),
            event=data["event"],
        )

