"""Backfill: the bulk lane (transaction-contacts imports) next to the per-event lane, under the same limits.

N synthetic customers, each an identify and a "Transaction Created" track event, go into the Qualtrics sandbox
twice, each time into a directory of its own (deduplicating on extRef, as the seeded one does):
- bulk: the backfill's own run (segment_qualtrics.tools.backfill_run) over a gzip NDJSON file, as
  `make backfill` does it, with an in-memory idempotency store and no queue (nothing here needs one);
- per event: the workers' executors (one create-contact call per identify, the batched transaction executor
  per 10 track events, as an SQS batch), on ``--workers`` threads (Lambda's concurrency), a 429 waiting out its
  Retry-After as a worker's visibility delay does. Measured on ``--per-event`` customers (it is slow: that is
  the point) and reported as a rate.

Both face the same sandbox limits: per endpoint class calls per minute (``--limit``, default Qualtrics'
documented 500 contact writes and 100 imports a minute, and as much for searches and transactions), a latency
per call, and the import jobs' speed and concurrency. Time is scaled by ``--scale``: windows, latencies and
import speeds run that many times faster, and every figure is given back in unscaled (Qualtrics) minutes.

Checked at the end: each lane's directory holds exactly N contacts and N transactions (one per event, none
twice), and every reject is accounted for (none are expected from this input).

    .venv/bin/python bench/backfill.py [--customers 200000] [--per-event 1500] [--scale 1]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "layers" / "common"), str(ROOT)]

from segment_qualtrics.adapters.qualtrics import QualtricsClient  # noqa: E402
from segment_qualtrics.delivery.executors import AddContactExecutor  # noqa: E402
from segment_qualtrics.delivery.idempotency import MemoryIdempotencyStore  # noqa: E402
from segment_qualtrics.delivery.transactions import ContactCache, TransactionExecutor  # noqa: E402
from segment_qualtrics.delivery.worker import Progress, QueuedWork  # noqa: E402
from segment_qualtrics.destination.envelope import QueueMessage  # noqa: E402
from segment_qualtrics.destination.subscriptions import parse_subscriptions  # noqa: E402
from segment_qualtrics.tools.backfill_input import open_input  # noqa: E402
from segment_qualtrics.tools.backfill_plan import BULK, Planner  # noqa: E402
from segment_qualtrics.tools.backfill_run import Backfill, Options  # noqa: E402

from local.sandbox.qualtrics_sandbox import QualtricsSandbox  # noqa: E402

TOKEN = "bench-token"
MAILING_LIST = "CG_BENCH"


def config(directory: str) -> dict:
    return {"subscriptions": [
        {"name": "Contacts", "actionSlug": "addContactToXmd", "trigger": 'type = "identify"',
         "mapping": {"directoryId": directory}},
        {"name": "Transactions", "actionSlug": "upsertContactTransaction",
         "trigger": 'type = "track" and event = "Transaction Created"',
         "mapping": {"directoryId": directory, "mailingListId": MAILING_LIST,
                     "transactionData": {"@path": "$.properties"}}},
    ]}


def customer_events(n: int) -> tuple[dict, dict]:
    user = f"customer-{n}"
    identify = {"type": "identify", "messageId": f"id-{n}", "userId": user,
                "traits": {"email": f"{user}@example.com", "firstName": "Ada", "lastName": f"L{n}"},
                "timestamp": "2025-06-01T10:00:00Z", "receivedAt": "2025-06-01T10:00:01Z"}
    track = {"type": "track", "event": "Transaction Created", "messageId": f"tx-{n}", "userId": user,
             "properties": {"orderId": f"order-{n}", "total": 10 + n % 90, "currency": "EUR"},
             "timestamp": "2025-06-02T11:00:00Z", "receivedAt": "2025-06-02T11:00:01Z"}
    return identify, track


class Calls:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_operation: Counter = Counter()

    def __call__(self, operation: str, status: int | None, seconds: float) -> None:
        with self.lock:
            self.by_operation[operation] += 1


def bulk_lane(base_url: str, directory: str, customers: int, workdir: Path, options: Options) -> dict:
    path = workdir / "events.ndjson.gz"
    with gzip.open(path, "wb", compresslevel=1) as handle:
        for n in range(customers):
            for event in customer_events(n):
                handle.write(json.dumps(event, separators=(",", ":")).encode() + b"\n")
    calls = Calls()
    client = QualtricsClient.with_token(TOKEN, "bench", base_url, on_call=calls)
    subscriptions = parse_subscriptions(config(directory), environ={})
    lanes = {"addContactToXmd": BULK, "upsertContactTransaction": BULK}
    started = time.monotonic()
    run = Backfill(stream_factory=lambda: open_input(str(path)), input_identity={"bench": customers},
                   planner=lambda: Planner(subscriptions, lanes, MAILING_LIST), fingerprint="bench",
                   checkpoint_path=workdir / "checkpoint.json", rejects_path=workdir / "rejects.ndjson",
                   client=client, store=MemoryIdempotencyStore(), publisher=None, queue_actions=set(),
                   options=options, max_record_bytes=1 << 22)
    stats = run.run()
    seconds = time.monotonic() - started
    reasons: Counter = Counter()
    if (workdir / "rejects.ndjson").exists():   # why, so that a reject is never left unexplained
        with open(workdir / "rejects.ndjson", encoding="utf-8") as handle:
            reasons.update(json.loads(line)["reason"][:160] for line in handle)
    return {"seconds": seconds, "calls": dict(calls.by_operation), "rejects": stats.rejects, "reasons": reasons,
            "loaded": stats.contacts_loaded, "finished": run.checkpoint.data["finished"]}


def per_event_lane(base_url: str, directory: str, customers: int, workers: int) -> dict:
    calls = Calls()
    subscriptions = {s.name: s for s in parse_subscriptions(config(directory), environ={})}
    work: list[tuple[str, list[QueuedWork]]] = []
    for action, name in (("addContactToXmd", "Contacts"), ("upsertContactTransaction", "Transactions")):
        deliveries = []
        for n in range(customers):
            event = customer_events(n)[0 if action == "addContactToXmd" else 1]
            message = QueueMessage(action, name, event["messageId"], event["receivedAt"], event)
            delivery = QueuedWork(f"{action}-{n}", "", "", 1, message=message, subscription=subscriptions[name])
            delivery.payload = subscriptions[name].action.build_payload(subscriptions[name].mapping, event)
            deliveries.append(delivery)
        work += [(action, deliveries[i:i + 10]) for i in range(0, len(deliveries), 10)]   # SQS batches of 10
    local = threading.local()

    def deliver(job: tuple[str, list[QueuedWork]]) -> int:
        action, batch = job
        if not hasattr(local, "client"):   # one warm "Lambda container" per thread: its client and contact cache
            local.client = QualtricsClient.with_token(TOKEN, "bench", base_url, on_call=calls)
            local.contacts = AddContactExecutor(local.client)
            local.transactions = TransactionExecutor(local.client, ContactCache())
        executor = local.contacts if action == "addContactToXmd" else local.transactions
        waits = 0
        while batch:
            progress = Progress()
            errors = executor.execute(batch, progress)
            retry = [d for d in batch if d.sqs_message_id in errors and errors[d.sqs_message_id].retryable]
            wrong = [e for e in errors.values() if not e.retryable]
            if wrong:
                raise RuntimeError(f"per-event lane: {wrong[0].code}: {wrong[0].message}")
            if retry:
                delay = max((errors[d.sqs_message_id].retry_after or 1.0) for d in retry)
                time.sleep(delay)
                waits += 1
                for d in retry:
                    d.recovering = True   # as the worker does after a transient failure: check before acting
            batch = retry
        return waits

    started = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        waits = sum(pool.map(deliver, work))
    return {"seconds": time.monotonic() - started, "calls": dict(calls.by_operation), "waits": waits}


def check_directory(base_url: str, directory: str, customers: int) -> dict:
    state = requests.get(base_url + "/_sandbox/state", timeout=600).json()["directories"][directory]
    contacts = Counter(c["extRef"] for c in state["contacts"])
    transactions = Counter(t["data"].get("segmentMessageId") for t in state["transactions"])
    return {"contacts": len(contacts), "duplicateContacts": sum(n - 1 for n in contacts.values()),
            "transactions": sum(transactions.values()),
            "duplicateTransactions": sum(n - 1 for n in transactions.values()),
            "expected": customers}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--per-event", type=int, default=1_500, help="customers the per-event lane loads")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="Qualtrics' time runs this many times faster (default 1: our own CPU time is not scaled, "
                             "so a scale above 1 understates the bulk lane, whose planning is CPU-bound)")
    parser.add_argument("--workers", type=int, default=10, help="per-event lane concurrency (Lambda's)")
    parser.add_argument("--per-minute", type=int, default=500,
                        help="calls a minute for contact writes, searches and transactions each (Qualtrics: 500)")
    parser.add_argument("--imports-per-minute", type=int, default=100, help="import submissions a minute (100)")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per call, unscaled (default 0.2)")
    parser.add_argument("--import-speed", type=float, default=1000.0,
                        help="contacts a running import processes per second, unscaled (default 1000)")
    parser.add_argument("--import-size", type=int, default=10_000, help="contacts per import (Qualtrics: 10,000)")
    parser.add_argument("--max-imports", type=int, default=20, help="imports the backfill runs at once (20)")
    parser.add_argument("--concurrent-jobs", type=int, default=25, help="imports the sandbox runs at once (25)")
    parser.add_argument("--queued-jobs", type=int, default=100, help="unfinished imports the sandbox accepts (100)")
    args = parser.parse_args()
    scale = args.scale
    limits = {"contact_writes": args.per_minute, "searches": args.per_minute, "transactions": args.per_minute,
              "imports": args.imports_per_minute, "windowSeconds": 60 / scale}
    sandbox = QualtricsSandbox(TOKEN, port=0, limits=limits, latency={"seconds": args.latency / scale},
                               imports={"contactsPerSecond": args.import_speed * scale,
                                        "maxConcurrentJobs": args.concurrent_jobs,
                                        "maxQueuedJobs": args.queued_jobs}).start()
    base = sandbox.base_url
    try:
        for directory in ("POOL_BULK", "POOL_EVENT"):
            requests.post(base + "/_sandbox/directories", timeout=10, json={
                "directoryId": directory, "deduplicationCriteria": {"externalDataReference": True},
                "mailingLists": [MAILING_LIST]}).raise_for_status()
        with tempfile.TemporaryDirectory() as workdir:
            options = Options(poll_seconds=0.2, import_contacts=args.import_size, segment_items=args.import_size,
                              max_imports=args.max_imports)
            bulk = bulk_lane(base, "POOL_BULK", args.customers, Path(workdir), options)
        event = per_event_lane(base, "POOL_EVENT", args.per_event, args.workers)
        bulk_check = check_directory(base, "POOL_BULK", args.customers)
        event_check = check_directory(base, "POOL_EVENT", args.per_event)
    finally:
        sandbox.stop()

    def row(name: str, customers: int, result: dict, check: dict) -> dict:
        minutes = result["seconds"] * scale / 60   # Qualtrics time
        calls = sum(result["calls"].values())
        return {"lane": name, "customers": customers, "qualtricsCalls": calls, "callsPerContact": calls / customers,
                "wallSecondsScaled": result["seconds"], "qualtricsMinutes": minutes,
                "contactsPerMinute": customers / minutes, **check, "callsByOperation": result["calls"]}

    rows = [row("bulk (imports)", args.customers, bulk, bulk_check),
            row("per event (workers)", args.per_event, event, event_check)]
    print(f"limits: {args.per_minute}/min contact writes, searches, transactions; {args.imports_per_minute}/min "
          f"imports; {args.latency}s a call; imports {args.import_speed:g} contacts/s, {args.concurrent_jobs} at once; "
          f"{args.import_size:,} contacts an import, {args.max_imports} at once; time x{scale:g}")
    print(f"{'lane':<22}{'customers':>10}{'calls':>9}{'calls/contact':>15}{'wall s':>9}{'Qualtrics min':>15}"
          f"{'contacts/min':>14}{'contacts':>10}{'transactions':>14}{'dups':>6}")
    for r in rows:
        print(f"{r['lane']:<22}{r['customers']:>10,}{r['qualtricsCalls']:>9,}{r['callsPerContact']:>15.4f}"
              f"{r['wallSecondsScaled']:>9.1f}{r['qualtricsMinutes']:>15.1f}{r['contactsPerMinute']:>14,.0f}"
              f"{r['contacts']:>10,}{r['transactions']:>14,}{r['duplicateContacts'] + r['duplicateTransactions']:>6}")
    speedup = rows[0]["contactsPerMinute"] / rows[1]["contactsPerMinute"]
    print(f"bulk / per event: {speedup:.1f}x contacts a minute; rejects: {bulk['rejects']} (none expected)")
    for reason, count in bulk["reasons"].most_common(5):
        print(f"  reject x{count}: {reason}")
    for r in rows:
        print(f"  {r['lane']}: calls {r['callsByOperation']}")
    ok = (bulk["finished"] and bulk["rejects"] == 0 and all(
        r["contacts"] == r["expected"] and r["transactions"] == r["expected"]
        and r["duplicateContacts"] == r["duplicateTransactions"] == 0 for r in rows))
    print("check:", "every customer and transaction loaded once in both lanes" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
