"""The queue message envelope: what the ingest puts on an action queue and a worker reads back.

A message keeps the raw Segment event and the subscription name, not the mapped payload, so a
mapping fixed after a failure applies when the dead-letter queue is redriven (DESIGN.md section 2).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any

ENVELOPE_VERSION = 1
# Compact, non-ASCII kept: the one JSON form of a message. Built once; ``encode`` of a str is a C call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


_encode_str = json.encoder.encode_basestring   # what _ENCODER.encode calls for a str (ensure_ascii off)


def encode_event(event: dict[str, Any]) -> str:
    """An event as ``to_json`` writes it: the ingest encodes each event once for all its messages."""
    return _ENCODER.encode(event)


class EnvelopeError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class QueueMessage:
    action: str          # action slug, e.g. "addContactToXmd"
    subscription: str    # subscription name in the subscriptions file
    message_id: str      # Segment messageId
    received_at: str     # ISO time the ingest accepted the event
    event: dict[str, Any]
    # The event's JSON text when the caller has it: as cut from the request body, or encoded once for
    # all the event's messages. None: encoded when needed.
    event_json: str | None = field(default=None, compare=False, repr=False)
    _json: str | None = field(default=None, init=False, compare=False, repr=False)   # to_json, once made

    @property
    def idempotency_key(self) -> str:
        # Segment's messageId, not the SQS one: a re-post of the same event gets a new SQS id.
        return f"{self.action}#{self.subscription}#{self.message_id}"

    def to_json(self) -> str:
        """``{"version", "action", "subscription", "messageId", "receivedAt", "event"}`` as compact JSON.

        Written piece by piece, so that the event, the bulk of it, is encoded at most once per event
        (or not at all when its text came with it). Without ``event_json`` the text is exactly
        ``json.dumps`` of that object with these settings. Made once per message (the ingest's size
        check and the SQS adapter both ask for it).
        """
        if self._json is None:
            action, subscription, message_id, received_at = (
                self.action, self.subscription, self.message_id, self.received_at)
            # The fields are str (but in a hand-made message): then the C function _ENCODER.encode
            # calls for a str does the same, without four calls of its Python wrapper.
            if type(action) is str and type(subscription) is str and type(message_id) is str \
                    and type(received_at) is str:
                encode = _encode_str
            else:
                encode = _ENCODER.encode
            event_json = self.event_json if self.event_json is not None else _ENCODER.encode(self.event)
            text = (f'{{"version":{ENVELOPE_VERSION},"action":{encode(action)},'
                    f'"subscription":{encode(subscription)},"messageId":{encode(message_id)},'
                    f'"receivedAt":{encode(received_at)},"event":{event_json}}}')
            object.__setattr__(self, "_json", text)
        return self._json

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



def _new_message(action: str, subscription: str, message_id: str, received_at: str,
                 event: dict[str, Any], event_json: str | None) -> QueueMessage:
    """``QueueMessage(...)``, made about twice as fast: for the ingest, a message per event and match.

    The generated __init__ of a frozen dataclass sets each field through object.__setattr__ by name,
    after the class call; here the slots' own setters fill a bare instance. Same fields, same values.
    """
    message = _bare(QueueMessage)
    set_action(message, action)
    set_subscription(message, subscription)
    set_message_id(message, message_id)
    set_received_at(message, received_at)
    set_event(message, event)
    set_event_json(message, event_json)
    set_json(message, None)
    return message


_bare = object.__new__
_FIELDS = ("action", "subscription", "message_id", "received_at", "event", "event_json", "_json")
if tuple(f.name for f in fields(QueueMessage)) != _FIELDS:   # _new_message must set every field
    raise RuntimeError("QueueMessage's fields changed: update _new_message")
(set_action, set_subscription, set_message_id, set_received_at, set_event, set_event_json, set_json) = (
    QueueMessage.__dict__[name].__set__ for name in _FIELDS
)
