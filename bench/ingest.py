"""Ingest CPU time per event, side by side with ``json.loads`` of the same bytes.

Run from the repository root: ``.venv/bin/python bench/ingest.py`` (``--quick`` for a short run).

What is timed is ``handle_ingest`` as the ingest function runs it after the HTTP API event is read:
size and content-type checks, X-Signature (HMAC-SHA1) check, parse, per-event validation, routing
through 10 subscriptions with realistic triggers, building the queue messages, and publishing them
through the real ``SqsPublisher`` (chunking, ``QueueMessage.to_json``, message attributes) into a fake
SQS client that only counts. Bodies: every ``events/ingest/*.json`` sample (except the bad-signature
one) and a generated 1,000-event batch. CPU time (``time.process_time``), warm-up first, best of N.
The target is at most 3x ``json.loads`` per event; nothing here asserts it.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "layers" / "common"))

from segment_qualtrics.aws import SqsPublisher  # noqa: E402
from segment_qualtrics.envelope import QueueMessage  # noqa: E402
from segment_qualtrics.events import split_body, split_body_with_text, validate_event  # noqa: E402
from segment_qualtrics.ingest import IngestCredentials, IngestRequest, handle_ingest, route  # noqa: E402
from segment_qualtrics.subscriptions import parse_subscriptions  # noqa: E402

SECRET = "bench-shared-secret"
ENV = {"QUALTRICS_DIRECTORY_ID": "POOL_BENCH", "QUALTRICS_MAILING_LIST_ID": "CG_BENCH",
       "QUALTRICS_WORKFLOW_URL": "https://iad1.qualtrics.com/inbound-event/v1/events/json/triggers?token=t"}

# Ten subscriptions of the kinds a real workspace has: the defaults plus narrower workflow triggers.
SUBSCRIPTIONS = [
    ("Create or update contact", "addContactToXmd", 'type = "identify"'),
    ("Upsert contact transaction", "upsertContactTransaction", 'type = "track" and event = "Transaction Created"'),
    ("Workflow: transaction", "triggerXflowWorkflow", 'type = "track" and event = "Transaction Created"'),
    ("Workflow: orders", "triggerXflowWorkflow", 'type = "track" and event in ["Order Completed", "Order Refunded"]'),
    ("Workflow: big orders", "triggerXflowWorkflow", 'type = "track" and properties.total > 100'),
    ("Workflow: pricing page", "triggerXflowWorkflow", 'type = "page" and match(properties.path, "/pricing*")'),
    ("Workflow: surveys", "triggerXflowWorkflow", 'type = "track" and contains(event, "Survey")'),
    ("Enterprise accounts", "addContactToXmd", 'type = "group" and traits.plan = "enterprise"'),
    ("Renewals", "upsertContactTransaction",
     'type = "track" and event = "Subscription Renewed" and properties.plan != null'),
    ("Sign-ups", "addContactToXmd",
     'type = "identify" and traits.email != null and !(context.library.name = "analytics-ios")'
     ' or (type = "track" and lowercase(event) = "signed up")'),
]
_MAPPINGS = {
    "addContactToXmd": {"directoryId": "${QUALTRICS_DIRECTORY_ID}"},
    "upsertContactTransaction": {"directoryId": "${QUALTRICS_DIRECTORY_ID}",
                                 "mailingListId": "${QUALTRICS_MAILING_LIST_ID}",
                                 "transactionData": {"@path": "$.properties"}},
    "triggerXflowWorkflow": {"workflowUrl": "${QUALTRICS_WORKFLOW_URL}"},
}


def subscriptions() -> list:
    config = {"subscriptions": [{"name": n, "enabled": True, "actionSlug": a, "trigger": t, "mapping": _MAPPINGS[a]}
                                for n, a, t in SUBSCRIPTIONS]}
    return parse_subscriptions(config, "bench", ENV)


class CountingSqs:
    """Stands in for the boto3 SQS client: accepts every entry, counts entries and body bytes."""

    def __init__(self) -> None:
        self.entries = 0
        self.bytes = 0

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803
        self.entries += len(Entries)
        self.bytes += sum(len(e["MessageBody"]) for e in Entries)
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}


def sample_bodies() -> list[tuple[str, bytes]]:
    bodies = []
    for path in sorted((ROOT / "events" / "ingest").glob("*.json")):
        if path.stem == "bad_signature":
            continue
        event = json.loads(path.read_text())
        bodies.append((path.stem, IngestRequest.from_http_api_event(event).body))
    return bodies


def batch_body(size: int = 1000, seed: int = 7) -> bytes:
    """A Webhooks (Actions) style JSON array mixing identify, track (several names), page and group."""
    rng = random.Random(seed)
    names = ["Transaction Created", "Order Completed", "Product Viewed", "Survey Answered", "Signed Up",
             "Subscription Renewed", "Cart Updated"]
    events = []
    for i in range(size):
        user = f"user-{rng.randrange(100_000)}"
        kind = rng.choices(["identify", "track", "page", "group"], weights=[3, 10, 4, 1])[0]
        event: dict[str, Any] = {
            "type": kind, "messageId": f"bench-{i:06d}", "userId": user, "anonymousId": None,
            "context": {"library": {"name": "analytics.js", "version": "2.11.1"}, "ip": "203.0.113.7",
                        "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15"},
            "integrations": {}, "timestamp": f"2026-11-29T10:{i // 60 % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z",
            "sentAt": "2026-11-29T10:00:00+00:00", "version": 2,
        }
        if kind == "identify":
            event["traits"] = {"email": f"{user}@example.com", "firstName": "Ada", "lastName": "Lovelace",
                               "phone": "+44 20 7946 0000", "language": "EN"}
        elif kind == "track":
            event["event"] = rng.choice(names)
            event["properties"] = {"orderId": f"ord-{i}", "total": round(rng.uniform(5, 300), 2), "currency": "EUR",
                                   "plan": "pro", "items": [{"sku": "SKU-1", "qty": 2}]}
        elif kind == "page":
            event["name"] = "Pricing"
            event["properties"] = {"path": rng.choice(["/pricing", "/pricing/teams", "/docs"]), "title": "Pricing"}
        else:
            event["groupId"] = f"org-{rng.randrange(100)}"
            event["traits"] = {"name": "Acme", "plan": rng.choice(["enterprise", "team"])}
        events.append(event)
    return json.dumps(events, separators=(",", ":")).encode()


def cpu_per_call(fns: dict[str, Callable[[], Any]], *, min_seconds: float, repeat: int) -> dict[str, float]:
    """CPU seconds per call of each function: calibrated loops, warm-up, then best of ``repeat`` rounds.

    The functions take turns within each round, so that a busy machine slows them alike.
    """
    numbers = {}
    for name, fn in fns.items():   # calibrate (doubles as the warm-up)
        number = 1
        while True:
            start = time.process_time()
            for _ in range(number):
                fn()
            if time.process_time() - start >= min_seconds:
                break
            number *= 2
        numbers[name] = number
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):
        for name, fn in fns.items():
            number = numbers[name]
            start = time.process_time()
            for _ in range(number):
                fn()
            best[name] = min(best[name], (time.process_time() - start) / number)
    return best


def measure(label: str, body: bytes, subs: list, *, min_seconds: float, repeat: int) -> dict[str, Any]:
    headers = {"content-type": "application/json",
               "x-signature": hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()}
    request = IngestRequest(headers, body)
    credentials = IngestCredentials(shared_secret=SECRET)
    sqs = CountingSqs()
    publisher = SqsPublisher(sqs, {"addContactToXmd": "q1", "upsertContactTransaction": "q2",
                                   "triggerXflowWorkflow": "q3"})
    response = handle_ingest(request, subs, credentials, publisher)
    events = len(split_body(body))
    best = cpu_per_call({"ingest": lambda: handle_ingest(request, subs, credentials, publisher),
                         "loads": lambda: json.loads(body)}, min_seconds=min_seconds, repeat=repeat)
    ingest, loads = best["ingest"], best["loads"]
    return {"label": label, "bytes": len(body), "events": events, "status": response.status,
            "messages": len(response.queued), "ingest": ingest / events, "loads": loads / events}


def breakdown(body: bytes, subs: list, *, min_seconds: float, repeat: int) -> list[tuple[str, float]]:
    """Where the time of one body goes (per event), stage by stage, as handle_ingest runs them."""
    raws, texts = split_body_with_text(body)
    count = len(raws)
    events = [validate_event(r) for r in raws]
    received_at = "2026-11-29T10:00:00Z"
    by_action: dict[str, list[QueueMessage]] = {}
    for event, text in zip(events, texts, strict=True):
        for message in route(event, subs, received_at, text):
            by_action.setdefault(message.action, []).append(message)
    publisher = SqsPublisher(CountingSqs(), dict.fromkeys(by_action, "q"))
    secret = SECRET.encode()
    stages: list[tuple[str, Callable[[], Any]]] = [
        ("json.loads (baseline)", lambda: json.loads(body)),
        ("X-Signature HMAC-SHA1", lambda: hmac.new(secret, body, hashlib.sha1).hexdigest()),
        ("parse (split_body_with_text)", lambda: split_body_with_text(body)),
        ("validate_event", lambda: [validate_event(r) for r in raws]),
        ("triggers (10 per event)", lambda: [[s.trigger.matches(e) for s in subs] for e in events]),
        ("route (triggers + messages)",
         lambda: [route(e, subs, received_at, t) for e, t in zip(events, texts, strict=True)]),
        (f"publish ({sum(map(len, by_action.values()))} messages)",
         lambda: [publisher.publish(a, msgs) for a, msgs in by_action.items()]),
    ]
    best = cpu_per_call(dict(stages), min_seconds=min_seconds, repeat=repeat)
    return [(name, seconds / count) for name, seconds in best.items()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (noisier figures)")
    args = parser.parse_args(argv)
    min_seconds, repeat = (0.02, 3) if args.quick else (0.2, 7)
    subs = subscriptions()
    assert QueueMessage  # the envelope the SQS adapter serialises
    rows = [measure(label, body, subs, min_seconds=min_seconds, repeat=repeat) for label, body in sample_bodies()]
    rows.append(measure("1,000-event batch", batch_body(), subs, min_seconds=min_seconds, repeat=repeat))

    print(f"Python {sys.version.split()[0]}, {len(subs)} subscriptions, CPU time per event (best of {repeat})")
    print(f"{'body':<28}{'bytes':>9}{'events':>8}{'status':>7}{'msgs':>6}"
          f"{'ingest µs':>11}{'loads µs':>10}{'ratio':>8}")
    for r in rows:
        print(f"{r['label']:<28}{r['bytes']:>9}{r['events']:>8}{r['status']:>7}{r['messages']:>6}"
              f"{r['ingest'] * 1e6:>11.1f}{r['loads'] * 1e6:>10.1f}{r['ingest'] / r['loads']:>7.2f}x")
    print()
    print("1,000-event batch, per event, by stage:")
    stages = breakdown(batch_body(), subs, min_seconds=min_seconds, repeat=repeat)
    for name, seconds in stages:
        print(f"  {name:<32}{seconds * 1e6:>8.2f} µs {seconds / stages[0][1]:>6.2f}x")


if __name__ == "__main__":
    main()
