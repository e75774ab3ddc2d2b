"""Ingest CPU time per event, side by side with ``json.loads`` of the same bytes.

Run from the repository root: ``.venv/bin/python bench/ingest.py`` (``--quick`` for a short run).

Two figures per body, each next to ``json.loads`` of the same bytes:
- pipeline: ``ingest_body``, what the issue asks to time: parse, validate each event, route it through
  10 subscriptions with realistic triggers, stamp and build the queue messages, and publish them through
  the ingest's own SQS adapter (``SqsPublisher``: SendMessageBatch entries with attributes, in chunks of
  10) over an SQS client that only counts;
- request: ``handle_ingest``, the whole request as the ingest function runs it once the HTTP API event is
  read: that plus the size and content-type checks and the X-Signature (HMAC-SHA1) check.
The bodies: every ``events/ingest/*.json`` sample (but the bad-signature one, the identify body again)
and a generated 1,000-event batch. CPU time (``time.process_time``) of short chunks that take turns (see
``cpu_per_call``). The target is at most 3x ``json.loads`` per event; nothing asserts it.

``--layer DIR`` measures another copy of the package (e.g. an older version, for before/after figures).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import importlib
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-shared-secret"
RECEIVED_AT = "2026-11-29T10:00:00Z"
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
MAPPINGS = {
    "addContactToXmd": {"directoryId": "${QUALTRICS_DIRECTORY_ID}"},
    "upsertContactTransaction": {"directoryId": "${QUALTRICS_DIRECTORY_ID}",
                                 "mailingListId": "${QUALTRICS_MAILING_LIST_ID}",
                                 "transactionData": {"@path": "$.properties"}},
    "triggerXflowWorkflow": {"workflowUrl": "${QUALTRICS_WORKFLOW_URL}"},
}


def load_package(layer: Path) -> SimpleNamespace:
    sys.path.insert(0, str(layer))
    names = ("aws", "envelope", "events", "ingest", "subscriptions")
    return SimpleNamespace(**{n: importlib.import_module(f"segment_qualtrics.{n}") for n in names})


def subscriptions(pkg: SimpleNamespace) -> list:
    config = {"subscriptions": [{"name": n, "enabled": True, "actionSlug": a, "trigger": t, "mapping": MAPPINGS[a]}
                                for n, a, t in SUBSCRIPTIONS]}
    return pkg.subscriptions.parse_subscriptions(config, "bench", ENV)


class CountingSqs:
    """An SQS client that only counts: SendMessageBatch takes every entry, and nothing leaves the process."""

    def __init__(self) -> None:
        self.calls = 0
        self.messages = 0

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803
        self.calls += 1
        self.messages += len(Entries)
        return {"Successful": [{"Id": entry["Id"]} for entry in Entries], "Failed": []}


def counting_publisher(pkg: SimpleNamespace) -> Any:
    """The ingest's real SQS adapter (SendMessageBatch in chunks of 10) over the counting client."""
    urls = {slug: f"https://sqs.local/queue/{slug}"
            for slug in ("addContactToXmd", "upsertContactTransaction", "triggerXflowWorkflow")}
    return pkg.aws.SqsPublisher(CountingSqs(), urls)


def sample_bodies(pkg: SimpleNamespace) -> list[tuple[str, bytes]]:
    bodies = []
    for path in sorted((ROOT / "events" / "ingest").glob("*.json")):
        if path.stem not in ("bad_signature", "duplicate_of_identify"):   # the identify body again
            bodies.append((path.stem, pkg.ingest.IngestRequest.from_http_api_event(json.loads(path.read_text())).body))
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


def cpu_per_call(fns: dict[str, Callable[[], Any]], *, chunk_seconds: float, rounds: int) -> dict[str, float]:
    """CPU seconds per call of each function: the fastest of ``rounds`` short timed chunks.

    Each chunk runs a function ``number`` times (calibrated to about ``chunk_seconds``). The functions take
    turns chunk by chunk, so a slow spell of a shared machine hits them alike, and the best chunk of each
    comes from the same quiet spells: the ratio of the two is steadier than either figure.
    """
    numbers = {}
    for name, fn in fns.items():   # calibrate (doubles as the warm-up)
        number = 1
        while True:
            start = time.process_time()
            for _ in range(number):
                fn()
            if time.process_time() - start >= chunk_seconds:
                break
            number *= 2
        numbers[name] = number
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            number = numbers[name]
            start = time.process_time()
            for _ in range(number):
                fn()
            best[name] = min(best[name], (time.process_time() - start) / number)
    return best


def measure(pkg: SimpleNamespace, label: str, body: bytes, subs: list, **timing: Any) -> dict[str, Any]:
    headers = {"content-type": "application/json",
               "x-signature": hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()}
    request = pkg.ingest.IngestRequest(headers, body)
    credentials = pkg.ingest.IngestCredentials(shared_secret=SECRET)
    publisher = counting_publisher(pkg)
    router = pkg.ingest.Router(subs)   # as the ingest function does: once per cold start
    response = pkg.ingest.handle_ingest(request, router, credentials, publisher)
    events = len(pkg.events.split_body(body))
    # Older versions kept a cache of checked timestamps: every call starts with it empty, as a new batch
    # with new timestamps would (the same body over and over would find all of them checked already).
    forget = getattr(pkg.events, "_GOOD_TIMES", set()).clear
    fns = {"request": lambda: (forget(), pkg.ingest.handle_ingest(request, router, credentials, publisher)),
           "loads": lambda: json.loads(body)}
    ingest_body = getattr(pkg.ingest, "ingest_body", None)   # absent from older versions
    if ingest_body is not None:
        fns["pipeline"] = lambda: (forget(), ingest_body(body, router, publisher))
    best = cpu_per_call(fns, **timing)
    return {"label": label, "bytes": len(body), "events": events, "status": response.status,
            "messages": len(response.queued), **{name: seconds / events for name, seconds in best.items()}}


def breakdown(pkg: SimpleNamespace, body: bytes, subs: list, **timing: Any) -> list[tuple[str, float]]:
    """Where the time of one body goes (per event), stage by stage, as ingest_body runs them."""
    events_module, ingest = pkg.events, pkg.ingest
    forget = getattr(events_module, "_GOOD_TIMES", set()).clear   # as in measure()
    raws = events_module.split_body(body)
    events = [events_module.validate_event(r, from_json=True) for r in raws]
    router = ingest.Router(subs)
    matched = [router.matching(e) for e in events]
    pairs = list(zip(matched, events, strict=True))
    messages = sum(len(m) for m in matched)
    publisher = counting_publisher(pkg)
    by_action: dict[str, list] = {}
    for m, e in pairs:
        for message in ingest._messages(m, e, RECEIVED_AT):
            by_action.setdefault(message.action, []).append(message)
    secret = SECRET.encode()
    stages: list[tuple[str, Callable[[], Any]]] = [
        ("json.loads (baseline)", lambda: json.loads(body)),
        ("X-Signature HMAC-SHA1", lambda: hmac.new(secret, body, hashlib.sha1).hexdigest()),
        ("parse (split_body)", lambda: events_module.split_body(body)),
        ("validate_event", lambda: (forget(), [events_module.validate_event(r, from_json=True) for r in raws])),
        ("triggers (Router.matching)", lambda: [router.matching(e) for e in events]),
        (f"messages + JSON ({messages})", lambda: [ingest._messages(m, e, RECEIVED_AT) for m, e in pairs]),
        ("publish (SqsPublisher, counting)", lambda: [publisher.publish(a, ms) for a, ms in by_action.items()]),
    ]
    best = cpu_per_call(dict(stages), **timing)
    return [(name, seconds / len(raws)) for name, seconds in best.items()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (noisier figures)")
    parser.add_argument("--layer", type=Path, default=ROOT / "layers" / "common",
                        help="folder holding the segment_qualtrics package to measure (default: layers/common)")
    args = parser.parse_args(argv)
    timing = {"chunk_seconds": 0.005, "rounds": 20} if args.quick else {"chunk_seconds": 0.005, "rounds": 300}
    pkg = load_package(args.layer.resolve())
    subs = subscriptions(pkg)
    rows = [measure(pkg, label, body, subs, **timing) for label, body in sample_bodies(pkg)]
    rows.append(measure(pkg, "1,000-event batch", batch_body(), subs, **timing))

    print(f"Python {sys.version.split()[0]}, package {args.layer}, {len(subs)} subscriptions")
    print(f"CPU time per event, best of {timing['rounds']} chunks, and its ratio to json.loads of the same body:")
    print("pipeline = ingest_body (parse, validate, route, messages, publish); request = handle_ingest (+ HMAC)")
    print(f"{'body':<26}{'bytes':>8}{'events':>7}{'status':>7}{'msgs':>6}{'loads µs':>10}"
          f"{'pipeline µs':>13}{'ratio':>7}{'request µs':>12}{'ratio':>7}")
    for r in rows:
        pipeline = (f"{r['pipeline'] * 1e6:>13.1f}{r['pipeline'] / r['loads']:>6.2f}x" if "pipeline" in r
                    else f"{'-':>13}{'-':>7}")
        print(f"{r['label']:<26}{r['bytes']:>8}{r['events']:>7}{r['status']:>7}{r['messages']:>6}"
              f"{r['loads'] * 1e6:>10.1f}{pipeline}{r['request'] * 1e6:>12.1f}{r['request'] / r['loads']:>6.2f}x")
    print()
    print("1,000-event batch, per event, by stage (x json.loads):")
    stages = breakdown(pkg, batch_body(), subs, **timing)
    for name, seconds in stages:
        print(f"  {name:<32}{seconds * 1e6:>8.2f} µs {seconds / stages[0][1]:>6.2f}x")


if __name__ == "__main__":
    main()
