"""The queue message envelope: what the ingest puts on an action queue and a worker reads back.

A message keeps the raw Segment event and the subscription name, not the mapped payload, so a
mapping fixed after a failure applies when the dead-letter queue is redriven (docs/architecture.md).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from pydantic_core import to_json as _rust_to_json

from segment_qualtrics.segment.charset import SQS_REFUSED

ENVELOPE_VERSION = 1
# Compact, non-ASCII kept: the one JSON form of a message. Built once; ``encode`` of a str is a C call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_encode_str = json.encoder.encode_basestring   # what _ENCODER.encode calls for a str (ensure_ascii off)

# A DynamoDB hash key holds at most 2048 bytes: keys longer than this are hashed.
MAX_PLAIN_KEY_BYTES = 1024


def sqs_safe(json_text: str) -> str:
    """JSON text with every character SQS refuses written as a ``\\uXXXX`` escape: the same JSON value.

    In JSON text such characters (U+FFFE, U+FFFF, a lone surrogate) can only be inside strings, where an
    escape means the same character; C0 controls are escaped by every JSON encoder (and refused raw by every
    JSON parser) already, so ``json_text`` must be valid JSON text or pieces of it.
    """
    # The usual cases, no copy: ASCII JSON text (a flag of the str) holds no raw control but JSON's whitespace;
    # printable text holds none of the refused characters.
    if json_text.isascii() or json_text.isprintable() or SQS_REFUSED.search(json_text) is None:
        return json_text
    return SQS_REFUSED.sub(lambda m: f"\\u{ord(m[0]):04x}", json_text)


def sqs_attribute_text(value: str) -> str:
    """An attribute value SQS takes (non-empty, no refused character); the body keeps the exact value."""
    if value.isprintable() and value:   # the usual case (printable text holds no refused character)
        return value
    return SQS_REFUSED.sub("\ufffd", value) or "-"


SQS_MAX_MESSAGE_BYTES = 1024 * 1024   # body and attributes (names, types, values) together


def sqs_entry_problem(body: str, attributes: dict[str, dict[str, str]]) -> str | None:
    """What SQS would refuse in one SendMessage entry (its documented rules, which a local moto server does
    not all enforce), or None. For tests and checks: the ingest's messages are built to pass it."""
    if not body:
        return "an empty body"
    if bad := SQS_REFUSED.search(body):
        return f"the body holds {bad[0]!a}"
    size = len(body.encode())
    for name, attribute in attributes.items():
        value = attribute.get("StringValue")
        if not value:
            return f"attribute {name} is empty"
        if bad := SQS_REFUSED.search(value):
            return f"attribute {name} holds {bad[0]!a}"
        size += len(name.encode()) + len(attribute["DataType"].encode()) + len(value.encode())
    return f"{size} bytes, over {SQS_MAX_MESSAGE_BYTES}" if size > SQS_MAX_MESSAGE_BYTES else None


def encode_event(event: dict[str, Any]) -> str:
    """An event's compact JSON text, non-ASCII kept: the ingest encodes each event once for all its messages.

    pydantic-core's serializer (Rust, part of pydantic) writes it in about a third of the json module's
    time. It refuses what UTF-8 cannot carry (a lone surrogate, which ``json.loads`` accepts as ``\\ud800``);
    the json module then writes it. Either way the same JSON value (``envelope_tail`` escapes what SQS refuses).
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
    return sqs_safe(
        f'{{"version":{ENVELOPE_VERSION},"action":{_text(action)},"subscription":{_text(subscription)},"messageId":')


def envelope_tail(message_id: str, received_at: str, event_json: str) -> str:
    """The rest of a message's JSON after ``envelope_head``, the same for every message of one event.

    ``event_json`` may be the event's text as sent: the characters SQS refuses are escaped here.
    """
    if type(message_id) is str and type(received_at) is str:   # as the ingest's always are: no _text calls
        return sqs_safe(f'{_encode_str(message_id)},"receivedAt":{_encode_str(received_at)},"event":{event_json}}}')
    return sqs_safe(f'{_text(message_id)},"receivedAt":{_text(received_at)},"event":{event_json}}}')


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
        """``action#subscription#messageId``: Segment's messageId, not the SQS one (a re-post of the same event
        gets a new SQS id). Over MAX_PLAIN_KEY_BYTES (a DynamoDB hash key holds 2048), ``sha256#`` and the
        hex SHA-256 of that text instead: the same for every copy of the message, and the id stays in it.
        A subscription (or action) name holding '#' gets ``sha256t#`` and the SHA-256 of the length-prefixed
        parts: distinct messages never share a key, and keys of names without '#' are unchanged."""
        action, subscription, message_id = str(self.action), str(self.subscription), str(self.message_id)
        if "#" in action or "#" in subscription:
            # The plain text would be ambiguous ("Orders" + "vip#m" = "Orders#vip" + "m"): the hash of the three
            # parts, each length-prefixed. Its prefix differs from "sha256", and a plain key has two '#' or more.
            parts = b"".join(b"%d:%s" % (len(data), data) for data in (
                part.encode("utf-8", "surrogatepass") for part in (action, subscription, message_id)))
            return "sha256t#" + hashlib.sha256(parts).hexdigest()
        # No '#' in action and subscription: the first two '#' split the text back into its three parts.
        key = f"{action}#{subscription}#{message_id}"
        if len(key) * 4 <= MAX_PLAIN_KEY_BYTES:   # surely short enough, whatever the characters
            return key
        data = key.encode("utf-8", "surrogatepass")
        return key if len(data) <= MAX_PLAIN_KEY_BYTES else "sha256#" + hashlib.sha256(data).hexdigest()

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
        # SQS refuses an empty value or one refused character: each value is made safe (the body keeps them).
        return {
            "action": {"DataType": "String", "StringValue": sqs_attribute_text(self.action)},
            "subscription": {"DataType": "String", "StringValue": sqs_attribute_text(self.subscription)},
            "segmentMessageId": {"DataType": "String", "StringValue": sqs_attribute_text(str(self.message_id))},
            "eventType": {"DataType": "String", "StringValue": sqs_attribute_text(str(self.event.get("type", "")))},
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
        # A hand-made message may hold any JSON there: the key, the lookups and the dead letter need text.
        not_text = [k for k in ("action", "subscription", "messageId", "receivedAt")
                    if k in data and not isinstance(data[k], str)]
        if not_text:
            raise EnvelopeError(f"message {', '.join(not_text)} not a string")
        if not isinstance(data["event"], dict):
            raise EnvelopeError("message event is not an object")
        return cls(
            action=data["action"],
            subscription=data["subscription"],
            message_id=data["messageId"],
            received_at=data.get("receivedAt", ""),
            event=data["event"],
        )

