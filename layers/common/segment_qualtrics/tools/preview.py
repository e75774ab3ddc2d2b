"""Dry run: what the destination would do with an event, down to the exact Qualtrics requests.

For every event (one event, an array, ``{"batch": [...]}`` or an API Gateway event with a ``body``) and
every subscription, it says whether the trigger matches and why (``Trigger.explain``), what the action
payload is (or why it is invalid), and which HTTP requests the worker would send to Qualtrics.

It runs the product's own code, not a copy of it: events are parsed and validated as the ingest does,
routed into queue messages by ``ingest.route``, read back by the real ``Worker`` (envelope, subscription,
mapping, payload validation) and delivered by the real executors through the real ``QualtricsClient``.
Only the edges are replaced: an in-memory idempotency store, and a ``requests`` transport that sends
nothing and answers as Qualtrics would for a directory where no contact matches yet (so the
upsertContactTransaction preview shows the search, the contact creation that follows only when the search
finds none, and the transactions call), or where one does for an executor that asks so (deleteContact shows
its search and the DELETE). No AWS, no network. The API token is a placeholder, masked.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import BaseAdapter

from segment_qualtrics.adapters.qualtrics import QualtricsClient, QualtricsCredentials
from segment_qualtrics.delivery.idempotency import MemoryIdempotencyStore
from segment_qualtrics.delivery.outcomes import Outcome
from segment_qualtrics.delivery.worker import QueuedWork, Worker
from segment_qualtrics.destination.errors import DestinationError
from segment_qualtrics.destination.subscriptions import Subscription
from segment_qualtrics.ingest.core import IngestRequest, route
from segment_qualtrics.segment.events import BodyError, split_body, validate_event
from segment_qualtrics.segment.mapping_kit import MappingError, resolve_mapping


class Skipped(StrEnum):
    """A subscription the worker would never see the event for (otherwise the preview shows its Outcome)."""

    DISABLED = "disabled"
    NOT_TRIGGERED = "not triggered"

TOKEN_PLACEHOLDER = "preview-api-token"
MASKED_TOKEN = "********"
CONTACT_PLACEHOLDER = "<contactId: the one the search found, else the one just created>"

# What each Qualtrics call is for, by the client's operation name and the action.
STEPS = {
    ("addContactToXmd", "create_contact"): "create the contact (the directory's deduplication may update one)",
    ("upsertContactTransaction", "search_contacts"): "look the contact up (no contactId)",
    ("upsertContactTransaction", "create_contact"): "create contact (only if the search finds none)",
    ("upsertContactTransaction", "list_transactions"): "look for an earlier attempt's transaction",
    ("upsertContactTransaction", "create_transactions"): "add the transaction (its key is derived from the "
                                                         "message, so a retry sends the same key)",
    ("triggerXflowWorkflow", "trigger_workflow"): "start the workflow",
}


class PreviewInputError(ValueError):
    """The input is not an event, a batch or an API Gateway event."""


@dataclass
class HttpCall:
    step: str
    method: str
    url: str
    headers: dict[str, str]
    body: Any = None            # the JSON body (None: no body)


@dataclass
class SubscriptionPreview:
    name: str
    action: str
    enabled: bool
    trigger: str
    triggered: bool
    why: str                                   # Trigger.explain
    outcome: Skipped | Outcome                 # the worker's outcome, or why it would not see the event
    resolved: dict[str, Any] | None = None     # the mapping resolved against the event, before validation
    payload: dict[str, Any] | None = None      # the validated action payload
    error: dict[str, Any] | None = None        # {"code", "message", ...} when the worker would fail it
    requests: list[HttpCall] = field(default_factory=list)


@dataclass
class EventPreview:
    index: int
    summary: str                               # type, event name, ids
    message_id: str | None = None
    error: str | None = None                   # the ingest would reject the event
    subscriptions: list[SubscriptionPreview] = field(default_factory=list)


@dataclass
class Preview:
    base_url: str
    events: list[EventPreview]
    warnings: list[str] = field(default_factory=list)
    config: str | None = None                  # where the subscriptions came from

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with camelCase names like the rest of the product's JSON (event data kept as is)."""
        return {"config": self.config, "baseUrl": self.base_url, "warnings": self.warnings, "events": [
            {"index": ev.index, "summary": ev.summary, "messageId": ev.message_id, "error": ev.error,
             "subscriptions": [
                 {"name": s.name, "action": s.action, "enabled": s.enabled, "trigger": s.trigger,
                  "triggered": s.triggered, "why": s.why, "outcome": s.outcome, "resolved": s.resolved,
                  "payload": s.payload, "error": s.error, "requests": [asdict(call) for call in s.requests]}
                 for s in ev.subscriptions]}
            for ev in self.events]}


# --- input --------------------------------------------------------------------------------------

def read_events(text: str | bytes) -> list[Any]:
    """The raw events of a file: a Segment event, an array, {"batch": [...]}, or an API Gateway event."""
    raw = text.encode() if isinstance(text, str) else text
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise PreviewInputError(f"not valid JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("body"), str) and "type" not in data:
        raw = IngestRequest.from_http_api_event(data).body   # as the ingest function reads it
    try:
        return split_body(raw)
    except BodyError as exc:
        raise PreviewInputError(exc.message) from None


# --- the dry run --------------------------------------------------------------------------------

def preview(
    raw_events: Sequence[Any],
    subscriptions: Sequence[Subscription],
    *,
    datacenter: str = "iad1",
    base_url: str | None = None,
    now: datetime | None = None,
) -> Preview:
    """Dry-run ``raw_events`` through ``subscriptions``. Raises PermanentError for a bad datacenter."""
    credentials = QualtricsCredentials.from_secret({"apiToken": TOKEN_PLACEHOLDER, "datacenter": datacenter})
    received_at = (now or datetime.now(UTC)).isoformat().replace("+00:00", "Z")
    result = Preview(base_url.rstrip("/") if base_url else f"https://{datacenter}.qualtrics.com", [])
    for index, raw in enumerate(raw_events):
        result.events.append(_preview_event(index, raw, subscriptions, credentials, base_url, received_at))
    return result


def _preview_event(index: int, raw: Any, subscriptions: Sequence[Subscription], credentials: QualtricsCredentials,
                   base_url: str | None, received_at: str) -> EventPreview:
    try:
        event = validate_event(raw, from_json=True)
    except ValueError as exc:
        return EventPreview(index, _summary(raw), error=f"the ingest rejects this event: {exc}")
    out = EventPreview(index, _summary(event), message_id=event["messageId"])
    for sub in subscriptions:
        triggered = sub.trigger.matches(event)
        item = SubscriptionPreview(sub.name, sub.action.slug, sub.enabled, sub.trigger.source, triggered,
                                   sub.trigger.explain(event), Skipped.NOT_TRIGGERED)
        if not sub.enabled:
            item.outcome = Skipped.DISABLED
        elif triggered:
            [message] = route(event, [sub], received_at)
            _deliver(item, sub, message.to_json(), credentials, base_url)
        out.subscriptions.append(item)
    return out


def _deliver(item: SubscriptionPreview, sub: Subscription, body: str, credentials: QualtricsCredentials,
             base_url: str | None) -> None:
    """Run the worker on the queue message, with a transport that records instead of sending."""
    transport = _DryRunTransport()
    session = requests.Session()
    session.mount("https://", transport)
    session.mount("http://", transport)
    client = QualtricsClient(lambda force: credentials, base_url, session=session, on_call=transport.name_last)
    executor = sub.action.executor_class()(client)
    # An executor may say what its calls are for, and what the dry run's search should find (deleteContact:
    # one contact, so the DELETE is shown); the others' searches find none.
    steps = {**{op: text for (slug, op), text in STEPS.items() if slug == sub.action.slug},
             **getattr(executor, "PREVIEW_STEPS", {})}
    transport.search_finds = list(getattr(executor, "PREVIEW_SEARCH_FINDS", []))
    dead_letters = _DeadLetters()
    outcomes: list[tuple[Outcome, DestinationError | None]] = []
    worker = Worker(action=sub.action.slug, subscriptions={sub.name: sub}, executor=executor,
                    store=MemoryIdempotencyStore(), dead_letters=dead_letters, visibility=_NoDelay(),
                    on_outcome=lambda outcome, _, error: outcomes.append((outcome, error)))
    delivery = QueuedWork.from_sqs_record(
        {"messageId": "preview-1", "receiptHandle": "preview", "body": body,
         "attributes": {"ApproximateReceiveCount": "1"}})
    worker.process([delivery])

    event = json.loads(body)["event"]
    try:
        item.resolved = resolve_mapping(sub.mapping, event)
    except MappingError as exc:
        item.resolved = {"(error)": str(exc)}
    if delivery.payload is not None:
        item.payload = delivery.payload.model_dump(exclude_none=True)
    if not outcomes:
        raise RuntimeError("the worker reported no outcome for the preview's message")
    item.outcome, error = outcomes[-1]
    if error is not None:
        item.error = error.describe()
    item.requests = [HttpCall(steps.get(op, op), *_shown(prepared))
                     for op, prepared in transport.sent]


def _shown(prepared: requests.PreparedRequest) -> tuple[str, str, dict[str, str], Any]:
    """Method, URL, headers (token masked; Content-Length left out: the body shown may hold a
    placeholder) and the JSON body, as requests prepared them for the wire."""
    headers = {k: (MASKED_TOKEN if k.lower() == "x-api-token" else _text(v)) for k, v in prepared.headers.items()
               if k.lower() != "content-length"}
    body = _body_text(prepared)
    return prepared.method or "", prepared.url or "", headers, None if body is None else json.loads(body)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _body_text(prepared: requests.PreparedRequest) -> str | None:
    """The JSON text the client sent: always str or bytes (it never streams a body)."""
    body = prepared.body
    if body is None or isinstance(body, str | bytes):
        return None if body is None else _text(body)
    raise TypeError(f"a {type(body).__name__} body: the Qualtrics client sends JSON text")


class _DryRunTransport(BaseAdapter):
    """A requests transport that sends nothing. It records each prepared request (as requests would put
    it on the wire) and answers as Qualtrics does for a directory where no contact matches yet."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, requests.PreparedRequest]] = []
        self.search_finds: list[dict[str, Any]] = []   # the contact search's elements

    def name_last(self, operation: str, status: int | None, seconds: float) -> None:
        """The client's call hook: names the request just recorded with its operation."""
        if self.sent and not self.sent[-1][0]:
            self.sent[-1] = (operation, self.sent[-1][1])

    def send(self, request: requests.PreparedRequest, stream: bool = False,
             timeout: float | tuple[float | None, float | None] | None = None, verify: bool | str = True,
             cert: str | tuple[str, str] | None = None, proxies: dict[str, str] | None = None) -> requests.Response:
        self.sent.append(("", request))
        status, answer = _answer(request, self.search_finds)
        response = requests.Response()
        response.status_code = status
        response.headers["Content-Type"] = "application/json"
        response.raw = io.BytesIO(b"" if answer is None else json.dumps(answer).encode())
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        pass


def _answer(request: requests.PreparedRequest, search_finds: list[dict[str, Any]]) -> tuple[int, Any]:
    path = urlsplit(request.url or "").path
    meta = {"httpStatus": "200 - OK", "requestId": "preview"}
    if "/API/v3/directories/" not in path:
        return 202, None                                               # a workflow's JSON event trigger
    if request.method == "DELETE":
        return 200, {"meta": meta}
    if path.endswith("/contacts/search"):
        return 200, {"result": {"elements": search_finds}, "meta": meta}   # by default no contact matches yet
    if path.endswith("/contacts") and request.method == "POST":
        return 200, {"result": {"id": CONTACT_PLACEHOLDER}, "meta": meta}
    if path.endswith("/transactions") and request.method == "POST":
        keys = json.loads(_body_text(request) or "{}")
        return 200, {"result": {"createdTransactions": {k: {"id": "CTR_preview"} for k in keys},
                                "unprocessedTransactions": {}}, "meta": meta}
    return 200, {"result": {"elements": []}, "meta": meta}


class _DeadLetters:
    def send(self, body: str, attributes: dict[str, dict[str, str]]) -> None:
        pass


class _NoDelay:
    def delay(self, receipt_handle: str, seconds: int) -> None:
        pass


def _summary(event: Any) -> str:
    if not isinstance(event, Mapping):
        return f"not an event: {json.dumps(event)[:60]}"
    parts = [str(event.get("type"))]
    if event.get("event"):
        parts.append(json.dumps(event["event"], ensure_ascii=False))
    for key in ("messageId", "userId", "anonymousId"):
        if event.get(key) is not None:
            parts.append(f"{key}={event[key]}")
    return " ".join(parts)


# --- text output --------------------------------------------------------------------------------

def render(result: Preview) -> str:
    lines = [f"subscriptions: {result.config}"] if result.config else []
    lines.append(f"Qualtrics API base: {result.base_url}")
    lines += [f"warning: {w}" for w in result.warnings]
    for ev in result.events:
        lines.append("")
        lines.append(f"event {ev.index + 1} of {len(result.events)}: {ev.summary}")
        if ev.error:
            lines.append(f"  {ev.error}")
            continue
        if not ev.subscriptions:
            lines.append("  no subscriptions")
        for sub in ev.subscriptions:
            lines += _render_subscription(sub)
    return "\n".join(lines) + "\n"


def _render_subscription(sub: SubscriptionPreview) -> list[str]:
    head = f"  - {sub.name!r} ({sub.action})"
    if sub.outcome is Skipped.DISABLED:
        return [f"{head}: disabled (its trigger {'would' if sub.triggered else 'would not'} match: {sub.why})"]
    if not sub.triggered:
        return [f"{head}: not triggered: {sub.why}"]
    lines = [f"{head}: triggered: {sub.why}"]
    if sub.payload is not None:
        lines.append(f"      payload: {_compact(sub.payload)}")
    else:
        lines.append(f"      mapping resolved to: {_compact(sub.resolved)}")
    if sub.error:
        lines.append(f"      the worker would dead-letter it: {sub.error['code']}: {sub.error['message']}")
    for number, call in enumerate(sub.requests, 1):
        lines.append(f"      {number}. {call.step}")
        lines.append(f"         {call.method} {call.url}")
        lines += [f"         {name}: {value}" for name, value in call.headers.items()]
        if call.body is not None:
            lines += ["         " + line for line in json.dumps(call.body, indent=2, ensure_ascii=False).splitlines()]
    if sub.outcome is Outcome.DELIVERED and not sub.requests:
        lines.append("      no request")
    return lines


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)
