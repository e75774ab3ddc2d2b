"""The ingest core: authenticate, parse, validate, route and enqueue Segment events.

Pure logic: the queue publisher is passed in (an SQS adapter in production, a counting fake in
benchmarks). The handler turns an API Gateway event into an ``IngestRequest`` and back.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any, Protocol

from segment_qualtrics.destination.envelope import QueueMessage, encode_event, envelope_head, envelope_tail
from segment_qualtrics.destination.subscriptions import Subscription
from segment_qualtrics.segment.events import BodyError, Refused, read_body, validate_event

# Below API Gateway's 10 MB and Lambda's 6 MB synchronous payload limits, with room for base64.
MAX_BODY_BYTES = 4 * 1024 * 1024
# One event must fit in one SQS message with its envelope; Segment's own cap is 32 KB per event.
MAX_EVENT_BYTES = 256 * 1024
# What an invalid event's entry in an answer may hold: its error text, its messageId (as JSON, in ASCII).
MAX_ERROR_CHARS = 300
MAX_ECHOED_ID_BYTES = 200


@dataclass(frozen=True)
class IngestCredentials:
    """What the ingest secret holds, plus the batch-signature switch (a template parameter, not the secret).

    The secret: ``{"sharedSecret": "..."}`` and/or ``{"bearerToken": "..."}``. During a rotation it also
    holds the value being replaced, ``previousSharedSecret`` / ``previousBearerToken``, accepted until
    ``previousValidUntil`` (ISO 8601 with a time zone; unreadable: the previous values are refused) or, without
    it, until they are removed. ``"requireBoth": true`` requires a signature and a bearer token on each request.
    """

    shared_secret: str | None = None
    bearer_token: str | None = None
    previous_shared_secret: str | None = None
    previous_bearer_token: str | None = None
    previous_valid_until: datetime | None = None   # None: no end; the previous values go when removed
    require_both: bool = False
    batch_first_element: bool = False   # accept Webhooks (Actions)' batch signature over the first element only

    @classmethod
    def from_secret(cls, value: Any, *, batch_first_element: bool = False) -> IngestCredentials:
        if not isinstance(value, Mapping):   # configures nothing: authenticate() answers 500 auth_not_configured
            value = {}
        return cls(_text(value.get("sharedSecret")), _text(value.get("bearerToken")),
                   _text(value.get("previousSharedSecret")), _text(value.get("previousBearerToken")),
                   _instant(value.get("previousValidUntil")), value.get("requireBoth") is True,
                   batch_first_element)

    def accepted(self, now: datetime | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The shared secrets and bearer tokens a request may use at ``now``: current first, then previous."""
        grace = self.previous_valid_until is None or (now or datetime.now(UTC)) < self.previous_valid_until
        secrets = (self.shared_secret, self.previous_shared_secret if grace else None)
        tokens = (self.bearer_token, self.previous_bearer_token if grace else None)
        return tuple(s for s in secrets if s), tuple(t for t in tokens if t)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _instant(value: Any) -> datetime | None:
    """``previousValidUntil``: an aware datetime; anything unreadable ends the grace (fail closed)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) and len(value) <= 64 else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        return datetime.min.replace(tzinfo=UTC)
    return moment


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


class Rejection(StrEnum):
    """Why an event of the request was refused: the EventsRejected metric's ``reason`` dimension (never the free
    text, which names fields and values). INVALID_EVENT is also the answer's code when the request's one event
    is refused."""

    INVALID_EVENT = "invalid_event"
    EVENT_TOO_LARGE = "event_too_large"


@dataclass
class IngestResponse:
    status: int
    body: dict[str, Any]
    queued: list[QueueMessage] = field(default_factory=list)
    # One Rejection per refused event, in the order of the answer's "invalid" list (not sent).
    rejected: list[Rejection] = field(default_factory=list)

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
    mac = _keyed_hmac(secret).copy()
    mac.update(data)
    return mac.hexdigest().encode()


@lru_cache(maxsize=4)
def _keyed_hmac(secret: str) -> hmac.HMAC:
    """An HMAC-SHA1 that has taken the key: copying it costs about half of keying a new one each request."""
    return hmac.new(secret.encode(), digestmod=hashlib.sha1)


def signature_matches(secret: str, body: bytes, signature: str, batch_first_element: bool = False) -> bool:
    """Segment's X-Signature: hex HMAC-SHA1 of the body.

    With ``batch_first_element``, a JSON-array body also passes with the HMAC of its first element alone:
    Segment's Webhooks (Actions) signs batches that way. That signature covers nothing after the first
    element, so anyone holding one signed batch can replay it with other events appended: off by default
    (template parameter AcceptBatchFirstElementSignature).
    """
    # Bytes, not str: compare_digest raises TypeError on a non-ASCII str (a 500 instead of a 401).
    expected = signature.strip().lower().encode()
    if hmac.compare_digest(_hmac_sha1(secret, body), expected):
        return True
    if batch_first_element and body.lstrip()[:1] == b"[":
        # A hostile first element is a mismatch, not a 500: nesting too deep for the decoder (RecursionError),
        # a lone surrogate escape ("\udfff") that cannot be re-encoded as UTF-8 (UnicodeEncodeError).
        try:
            text = body.decode("utf-8")
            start = text.index("[") + 1
            while start < len(text) and text[start] in " \t\r\n":
                start += 1
            first, end = json.JSONDecoder().raw_decode(text, start)
            # The first element's own text: Segment's JSON.stringify writes numbers as JavaScript does
            # (0.00001, 1e-7), which Python's json.dumps would re-write differently (1e-05, 1e-07).
            if hmac.compare_digest(_hmac_sha1(secret, text[start:end].encode()), expected):
                return True
            compact = json.dumps(first, separators=(",", ":"), ensure_ascii=False).encode()
        except (ValueError, RecursionError):   # UnicodeError is a ValueError
            return False
        return hmac.compare_digest(_hmac_sha1(secret, compact), expected)
    return False


def _bearer_matches(authorization: str, tokens: Sequence[str]) -> bool:
    scheme, _, token = authorization.partition(" ")
    given = token.strip().encode()
    return scheme.lower() == "bearer" and any(hmac.compare_digest(given, t.encode()) for t in tokens)


SIGNATURE_HEADER, BEARER_HEADER = "an X-Signature header", "an Authorization: Bearer header"


def authenticate(request: IngestRequest, credentials: IngestCredentials,
                 now: datetime | None = None) -> IngestResponse | None:
    """None when the request is authentic, else the 401 (or 500 when nothing usable is configured).

    A shared secret or a bearer token, each the current value or, during a rotation's grace, the previous one.
    A request carrying a signature is judged by it (a bad one is refused even with a good token). With
    ``requireBoth``, both must be present and right.
    """
    c = credentials
    if not (c.shared_secret or c.bearer_token):
        return error_response(500, "auth_not_configured",
                              "the ingest secret holds neither sharedSecret nor bearerToken")
    if c.require_both and not (c.shared_secret and c.bearer_token):
        return error_response(500, "auth_not_configured",
                              "the ingest secret sets requireBoth but lacks sharedSecret or bearerToken")
    secrets, tokens = c.accepted(now)
    signature = request.headers.get("x-signature") if c.shared_secret else None
    authorization = request.headers.get("authorization") if c.bearer_token else None
    signed = bool(signature and any(signature_matches(s, request.body, signature, c.batch_first_element)
                                    for s in secrets))
    if signature and not signed:
        return error_response(401, "bad_signature", "X-Signature does not match the body and the shared secret")
    bearer = bool(authorization and _bearer_matches(authorization, tokens))
    if authorization and not bearer and (c.require_both or not signed):
        return error_response(401, "bad_token", "the Authorization bearer token is not the configured one")
    if (signed and bearer) or ((signed or bearer) and not c.require_both):
        return None
    wanted = [name for name, on in ((SIGNATURE_HEADER, c.shared_secret), (BEARER_HEADER, c.bearer_token)) if on]
    return error_response(401, "unauthenticated",
                          f"the request needs {(' and ' if c.require_both else ' or ').join(wanted)}")


# --- the whole request ----------------------------------------------------------------------------

ECHO_LIMIT = 100   # characters of a caller's value an error message quotes; the rest is cut, not processed


def _echo(value: str | None) -> str:
    """A caller's value quoted in an answer (and so in the logs): cut before quoting, so it costs nothing."""
    if value is None or len(value) <= ECHO_LIMIT:
        return repr(value)
    return f"{value[:ECHO_LIMIT]!r}... ({len(value)} characters)"


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def route(event: dict[str, Any], subscriptions: Sequence[Subscription], received_at: str) -> list[QueueMessage]:
    """One message per enabled subscription whose trigger matches the event."""
    matched = [_target(sub) for sub in subscriptions if sub.enabled and sub.trigger.matches(event)]
    return _messages(matched, event, received_at)


# Where a matched event goes: (action slug, subscription name, the start of its messages' JSON).
Target = tuple[str, str, str]


def _target(sub: Subscription) -> Target:
    return sub.action.slug, sub.name, envelope_head(sub.action.slug, sub.name)


def _messages(matched: list[Target], event: dict[str, Any], received_at: str,
              event_json: str | None = None) -> list[QueueMessage]:
    """One message per matched target, with its JSON: the event is encoded once for all of them (not at
    all when the caller has its JSON text)."""
    if not matched:
        return []
    message_id = event["messageId"]
    tail = envelope_tail(message_id, received_at, event_json or encode_event(event))
    return [QueueMessage(slug, name, message_id, received_at, event, head + tail) for slug, name, head in matched]


class Router:
    """The enabled subscriptions, indexed by the event types and names their triggers require.

    Most triggers start with ``type = "..."``, and track triggers go on with ``event = "..."``: an
    identify need not evaluate the track triggers, nor an "Order Completed" those of "Signed Up".
    Built once per cold start; the order of the subscriptions is kept.
    """

    def __init__(self, subscriptions: Sequence[Subscription]) -> None:
        enabled = [sub for sub in subscriptions if sub.enabled]
        self.any_type = [sub for sub in enabled if sub.trigger.event_types is None]
        named = {t for sub in enabled for t in (sub.trigger.event_types or ())}
        self.by_type = {t: [sub for sub in enabled if sub.trigger.event_types is None or t in sub.trigger.event_types]
                        for t in named}
        # For matching: per event type, then per event name, (test, target) of each candidate. The
        # test leaves out the ``type``/``event`` conditions the index has checked (None: always true).
        self._routes = {t: _by_event_name(subs, {"type": t}) for t, subs in self.by_type.items()}
        self._any_type_routes = _by_event_name(self.any_type, {})

    def candidates(self, event_type: Any) -> list[Subscription]:
        return self.by_type.get(event_type, self.any_type)

    def matching(self, event: dict[str, Any]) -> list[Target]:
        """The target of each candidate whose trigger matches ``event``, in order."""
        by_name, other_names = self._routes.get(event["type"], self._any_type_routes)
        try:
            tests = by_name.get(event.get("event"), other_names)
            return [target for test, target in tests if test is None or test(event)]
        except Exception:
            # As Trigger.matches, which never raises: a trigger that cannot read the event is false.
            return [_target(sub) for sub in self.candidates(event["type"]) if sub.trigger.matches(event)]


_Tests = list[tuple[Any, Target]]   # (test or None, target)


def _by_event_name(subs: list[Subscription], known: dict[str, str]) -> tuple[dict[str | None, _Tests], _Tests]:
    """The tests of ``subs`` for each event name their triggers require, and for any other name."""
    names = {n for sub in subs for n in (sub.trigger.event_names or ())}
    # Keyed by name; looked up with whatever the event's "event" holds (None for most types).
    by_name: dict[str | None, _Tests] = {
        n: [(sub.trigger.test_given({**known, "event": n}), _target(sub)) for sub in subs
            if sub.trigger.event_names is None or n in sub.trigger.event_names] for n in names}
    other = [(sub.trigger.test_given(known), _target(sub)) for sub in subs if sub.trigger.event_names is None]
    return by_name, other


def handle_ingest(
    request: IngestRequest,
    subscriptions: Sequence[Subscription] | Router,
    credentials: IngestCredentials,
    publisher: Publisher,
    now: datetime | None = None,
) -> IngestResponse:
    """One request: its size, content type and authentication, then ``ingest_body``. ``now``: for tests."""
    if len(request.body) > MAX_BODY_BYTES:
        return error_response(413, "payload_too_large",
                              f"the body is {len(request.body)} bytes; the limit is {MAX_BODY_BYTES}")
    content_type = request.headers.get("content-type")
    if not _is_json(content_type):
        return error_response(415, "unsupported_media_type",
                              f"Content-Type must be application/json, got {_echo(content_type)}")
    denied = authenticate(request, credentials, now)
    if denied is not None:
        return denied
    router = subscriptions if isinstance(subscriptions, Router) else Router(subscriptions)
    return ingest_body(request.body, router, publisher, _utc_text(now) if now else None)


def ingest_body(body: bytes, router: Router, publisher: Publisher, received_at: str | None = None) -> IngestResponse:
    """An authentic request's body: parse, validate, route, build the messages and publish them.

    ``received_at``: the time to stamp on the messages (default: now).
    """
    try:
        raw_events, body_text = read_body(body)
    except BodyError as exc:   # 400, or 413 for too many events
        return error_response(exc.status, exc.code, exc.message)

    if received_at is None:
        received_at = _utc_now_text()
    invalid: list[dict[str, Any]] = []
    rejected: list[Rejection] = []   # why each entry of ``invalid`` was refused
    by_action: dict[str, list[QueueMessage]] = defaultdict(list)
    accepted = 0
    for index, raw in enumerate(raw_events):
        try:
            event = validate_event(raw, from_json=True)
        except ValueError as exc:
            invalid.append(_invalid(index, raw, str(exc)))
            rejected.append(Rejection.INVALID_EVENT)
            continue
        # A body that is one event carries that event's JSON text (unless validation added a messageId).
        messages = _messages(router.matching(event), event, received_at, body_text if event is raw else None)
        # SQS counts UTF-8 bytes; encode only when the characters alone could be over the limit. (_messages
        # made each message's JSON already.)
        if messages and len(text := messages[0].to_json()) > MAX_EVENT_BYTES // 4 \
                and len(text.encode()) > MAX_EVENT_BYTES:
            invalid.append(_invalid(index, raw, f"the event is larger than {MAX_EVENT_BYTES} bytes"))
            rejected.append(Rejection.EVENT_TOO_LARGE)
            continue
        accepted += 1
        for message in messages:
            by_action[message.action].append(message)

    if not accepted:
        if len(raw_events) == 1:
            refused = error_response(400, Rejection.INVALID_EVENT, f"the event is invalid: {invalid[0]['error']}")
        else:
            refused = error_response(400, "invalid_batch", "every event in the batch is invalid", invalid=invalid)
        refused.rejected = rejected
        return refused

    unaccepted = [m for action, msgs in by_action.items() for m in publisher.publish(action, msgs)]
    if unaccepted:
        # Segment retries 5xx; the events SQS did accept are deduplicated by the workers.
        return error_response(503, "queue_unavailable",
                              f"{len(unaccepted)} message(s) could not be queued; retry the request",
                              messageIds=sorted({m.message_id for m in unaccepted}))
    queued = [m for msgs in by_action.values() for m in msgs]
    summary = {
        "accepted": accepted,
        "invalid": invalid,
        "queued": {action: len(msgs) for action, msgs in sorted(by_action.items())},
    }
    return IngestResponse(200, summary, queued, rejected)


def _utc_text(moment: datetime) -> str:
    """ISO 8601 in UTC with microseconds and Z, e.g. 2026-11-30T01:02:03.000450Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_second_text: tuple[int, str] = (-1, "")   # the current second, formatted: one strftime per second


def _utc_now_text() -> str:
    """``_utc_text(datetime.now(UTC))`` in a fifth of its time: requests in one second share the formatting."""
    global _second_text
    second, micro = divmod(time.time_ns() // 1000, 1_000_000)
    if _second_text[0] != second:
        _second_text = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{_second_text[1]}.{micro:06d}Z"


def _invalid(index: int, raw: Any, error: str) -> dict[str, Any]:
    # Bounded, so that an answer listing MAX_EVENTS_PER_REQUEST invalid events stays far below the 6 MB a
    # Lambda function may return (over it, API Gateway would answer 5xx).
    if len(error) > MAX_ERROR_CHARS:
        error = error[:MAX_ERROR_CHARS] + "..."
    entry: dict[str, Any] = {"index": index, "error": error}
    message_id = raw.message_id if isinstance(raw, Refused) else raw.get("messageId") if isinstance(raw, dict) else None
    # Echoed as the client sent it when it is short: the index names the event anyway.
    if isinstance(message_id, str) and len(json.dumps(message_id)) <= MAX_ECHOED_ID_BYTES:
        entry["messageId"] = message_id
    return entry
