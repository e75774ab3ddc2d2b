"""The ingest core: authenticate, parse, validate, route and enqueue Segment events.

Pure logic: the queue publisher is passed in (an SQS adapter in production, a counting fake in
benchmarks). The handler turns an API Gateway event into an ``IngestRequest`` and back.
"""

from __future__ import annotations

import base64
import hmac
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from .envelope import QueueMessage, _new_message, encode_event
from .events import BodyError, split_body_with_text, validate_event
from .subscriptions import Subscription

# Below API Gateway's 10 MB and Lambda's 6 MB synchronous payload limits, with room for base64.
MAX_BODY_BYTES = 4 * 1024 * 1024
# One event must fit in one SQS message with its envelope; Segment's own cap is 32 KB per event.
MAX_EVENT_BYTES = 256 * 1024


@dataclass(frozen=True)
class IngestCredentials:
    shared_secret: str | None = None
    bearer_token: str | None = None

    @classmethod
    def from_secret(cls, value: Mapping[str, Any]) -> IngestCredentials:
        return cls(value.get("sharedSecret") or None, value.get("bearerToken") or None)


@dataclass
class IngestRequest:
    headers: dict[str, str]   # lower-cased names
    body: bytes

    @classmethod
    def from_http_api_event(cls, event: Mapping[str, Any]) -> IngestRequest:
        headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
        raw = event.get("body") or ""
        if event.get("isBase64Encoded"):
            body = base64.b64decode(raw)
        else:
            body = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
        return cls(headers, body)


@dataclass
class IngestResponse:
    status: int
    body: dict[str, Any]
    queued: list[QueueMessage] = field(default_factory=list)

    def to_http_api_response(self) -> dict[str, Any]:
        return {
            "statusCode": self.status,
            "headers": {"content-type": "application/json"},
            "body": json.dumps(self.body, separators=(",", ":")),
        }


class Publisher(Protocol):
    def publish(self, action: str, messages: Sequence[QueueMessage]) -> list[QueueMessage]:
        """Enqueue ``messages`` on the action's queue; return those SQS did not accept."""


def error_response(status: int, code: str, message: str, **extra: Any) -> IngestResponse:
    return IngestResponse(status, {"error": {"code": code, "message": message, **extra}})


# --- authentication -------------------------------------------------------------------------------

def _hmac_sha1(secret: str, data: bytes) -> bytes:
    return hmac.digest(secret.encode(), data, "sha1").hex().encode()   # one-shot: no HMAC object


def signature_matches(secret: str, body: bytes, signature: str) -> bool:
    """Segment's X-Signature: hex HMAC-SHA1 of the body.

    For a JSON-array batch, Webhooks (Actions) signs only the compact JSON of the first element
    (reference section 11.2), so that form is accepted too.
    """
    # Bytes, not str: compare_digest raises TypeError on a non-ASCII str (a 500 instead of a 401).
    signature = signature.strip().lower().encode()
    if hmac.compare_digest(_hmac_sha1(secret, body), signature):
        return True
    if body.lstrip()[:1] == b"[":
        try:
            text = body.decode("utf-8")
            start = text.index("[") + 1
            while start < len(text) and text[start] in " \t\r\n":
                start += 1
            first, end = json.JSONDecoder().raw_decode(text, start)
        except ValueError:
            return False
        # The first element's own text: Segment's JSON.stringify writes numbers as JavaScript does
        # (0.00001, 1e-7), which Python's json.dumps would re-write differently (1e-05, 1e-07).
        if hmac.compare_digest(_hmac_sha1(secret, text[start:end].encode()), signature):
            return True
        compact = json.dumps(first, separators=(",", ":"), ensure_ascii=False).encode()
        return hmac.compare_digest(_hmac_sha1(secret, compact), signature)
    return False


def authenticate(request: IngestRequest, credentials: IngestCredentials) -> IngestResponse | None:
    """None when the request is authentic, else the 401 (or 500 when nothing is configured)."""
    if not (credentials.shared_secret or credentials.bearer_token):
        return error_response(500, "auth_not_configured",
                              "the ingest secret holds neither sharedSecret nor bearerToken")
    signature = request.headers.get("x-signature")
    if credentials.shared_secret and signature:
        if signature_matches(credentials.shared_secret, request.body, signature):
            return None
        return error_response(401, "bad_signature", "X-Signature does not match the body and the shared secret")
    authorization = request.headers.get("authorization", "")
    if credentials.bearer_token and authorization:
        scheme, _, token = authorization.partition(" ")
        expected = credentials.bearer_token.encode()
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected):
            return None
        return error_response(401, "bad_token", "the Authorization bearer token is not the configured one")
    wanted = " or ".join(
        name for name, on in (("an X-Signature header", credentials.shared_secret),
                              ("an Authorization: Bearer header", credentials.bearer_token)) if on
    )
    return error_response(401, "unauthenticated", f"the request needs {wanted}")


# --- the whole request ----------------------------------------------------------------------------

def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def route(
    event: dict[str, Any], subscriptions: Sequence[Subscription], received_at: str, event_json: str | None = None
) -> list[QueueMessage]:
    """One message per enabled subscription whose trigger matches the event.

    ``event_json`` is the event's JSON text when the caller has it (as cut from the body); else the
    event is encoded here, once for all its messages.
    """
    matched = [(sub.action.slug, sub.name) for sub in subscriptions if sub.enabled and sub.trigger.matches(event)]
    return _messages(matched, event, received_at, event_json)


def _messages(matched: list[tuple[str, str]], event: dict[str, Any], received_at: str,
              event_json: str | None) -> list[QueueMessage]:
    """One message per matched (action slug, subscription name); the event is encoded at most once."""
    if not matched:
        return []
    if event_json is None:
        event_json = encode_event(event)
    message_id = event["messageId"]
    return [_new_message(slug, name, message_id, received_at, event, event_json) for slug, name in matched]


class Router:
    """The enabled subscriptions, indexed by the event types their triggers require.

    Most triggers start with ``type = "..."``: an identify need not evaluate the track triggers.
    Built once per cold start; the order of the subscriptions is kept.
    """

    def __init__(self, subscriptions: Sequence[Subscription]) -> None:
        enabled = [sub for sub in subscriptions if sub.enabled]
        self.any_type = [sub for sub in enabled if sub.trigger.event_types is None]
        named = {t for sub in enabled for t in (sub.trigger.event_types or ())}
        self.by_type = {t: [sub for sub in enabled if sub.trigger.event_types is None or t in sub.trigger.event_types]
                        for t in named}

        # For handle_ingest, per event type: (test, action slug, name) of each candidate, the test
        # without the ``type = "..."`` the index already checked (None: always true). Fewer calls than
        # ``trigger.matches`` per subscription.
        self._tests = {t: [(sub.trigger._test_for_type(t), sub.action.slug, sub.name) for sub in subs]
                       for t, subs in self.by_type.items()}
        self._any_tests = [(sub.trigger.matches, sub.action.slug, sub.name) for sub in self.any_type]

    def candidates(self, event_type: Any) -> list[Subscription]:
        return self.by_type.get(event_type, self.any_type)

    def matching(self, event: dict[str, Any]) -> list[tuple[str, str]]:
        """(action slug, subscription name) of each candidate whose trigger matches ``event``, in order."""
        tests = self._tests.get(event["type"], self._any_tests)
        try:
            return [(slug, name) for test, slug, name in tests if test is None or test(event)]
        except Exception:
            # As Trigger.matches, which never raises: a trigger that cannot read the event is false.
            candidates = self.candidates(event["type"])
            return [(sub.action.slug, sub.name) for sub in candidates if sub.trigger.matches(event)]


def handle_ingest(
    request: IngestRequest,
    subscriptions: Sequence[Subscription] | Router,
    credentials: IngestCredentials,
    publisher: Publisher,
    now: datetime | None = None,
) -> IngestResponse:
    if len(request.body) > MAX_BODY_BYTES:
        return error_response(413, "payload_too_large",
                              f"the body is {len(request.body)} bytes; the limit is {MAX_BODY_BYTES}")
    if not _is_json(request.headers.get("content-type")):
        return error_response(415, "unsupported_media_type",
                              f"Content-Type must be application/json, got {request.headers.get('content-type')!r}")
    denied = authenticate(request, credentials)
    if denied is not None:
        return denied
    try:
        raw_events, texts = split_body_with_text(request.body)
    except BodyError as exc:
        return error_response(400, exc.code, exc.message)

    router = subscriptions if isinstance(subscriptions, Router) else Router(subscriptions)
    received_at = (now or datetime.now(UTC)).isoformat().replace("+00:00", "Z")
    invalid: list[dict[str, Any]] = []
    by_action: dict[str, list[QueueMessage]] = defaultdict(list)
    accepted = 0
    for index, raw in enumerate(raw_events):
        try:
            event = validate_event(raw, from_json=True)
        except ValueError as exc:
            invalid.append(_invalid(index, raw, str(exc)))
            continue
        # The text as received stands for the event unless validation added a derived messageId.
        messages = _messages(router.matching(event), event, received_at, texts[index] if event is raw else None)
        # SQS counts UTF-8 bytes; encode only when the characters alone could be over the limit.
        if messages and len(text := messages[0].to_json()) > MAX_EVENT_BYTES // 4 \
                and len(text.encode()) > MAX_EVENT_BYTES:
            invalid.append(_invalid(index, raw, f"the event is larger than {MAX_EVENT_BYTES} bytes"))
            continue
        accepted += 1
        for message in messages:
            by_action[message.action].append(message)

    if not accepted:
        if len(raw_events) == 1:
            return error_response(400, "invalid_event", f"the event is invalid: {invalid[0]['error']}")
        return error_response(400, "invalid_batch", "every event in the batch is invalid", invalid=invalid)

    unaccepted = [m for action, msgs in by_action.items() for m in publisher.publish(action, msgs)]
    if unaccepted:
        # Segment retries 5xx; the events SQS did accept are deduplicated by the workers.
        return error_response(503, "queue_unavailable",
                              f"{len(unaccepted)} message(s) could not be queued; retry the request",
                              messageIds=sorted({m.message_id for m in unaccepted}))
    queued = [m for msgs in by_action.values() for m in msgs]
    body = {
        "accepted": accepted,
        "invalid": invalid,
        "queued": {action: len(msgs) for action, msgs in sorted(by_action.items())},
    }
    return IngestResponse(200, body, queued)


def _invalid(index: int, raw: Any, error: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"index": index, "error": error}
    if isinstance(raw, dict) and isinstance(raw.get("messageId"), str):
        entry["messageId"] = raw["messageId"]
    return entry
