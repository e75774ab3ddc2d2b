"""Throughput up to Qualtrics' limits: delivered per window per action against the configured limit.

Drives the real handlers (the local stack: moto, the Qualtrics sandbox, a process per function) with
several worker processes per action running at once, as Lambda runs them (``--workers``, the event source's
MaximumConcurrency). The sandbox adds ``--latency`` seconds to every call and enforces the limits with 429 +
Retry-After; the workers' rate limiter is given the same budgets. A feeder posts identify and transaction
events above those limits for ``--seconds``; the table reports, over the steady part of the run (after
``--warmup``), per action: delivered events and Qualtrics calls per window against the limit, the sandbox's
429s, dead letters, and what is left queued.

Time is scaled: limits are per ``--window`` seconds (30 by default) instead of a minute, so the run takes
minutes; latency is not scaled (1 s, as a slow Qualtrics answers). The default limits (4 contact writes and
0.5 transactions calls a second) keep the local stack's own work (moto, the processes) within a small
machine's reach: a worker's throughput here is bounded by that machine as much as by the limits.

Three modes, each on a fresh stack state:
- ``today``: one call after another within a batch, no rate limiter (the code before issue 13);
- ``unlimited``: calls concurrent within a batch, no rate limiter (what the limiter prevents);
- ``limiter``: calls concurrent within a batch, every call through the brand's shared rate limiter.

    .venv/bin/python bench/throughput.py [--seconds 120] [--workers 2] [--latency 1] [--modes today,limiter]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "layers" / "common"), str(ROOT)]

from local.runtime import LocalFunction  # noqa: E402
from local.stack import LocalStack  # noqa: E402

ACTIONS = {   # action -> (worker function, dead-letter queue, endpoint class its limit is on)
    "addContactToXmd": ("AddContactToXmdFunction", "AddContactToXmdDeadLetterQueue", "contact_writes"),
    "upsertContactTransaction": ("UpsertContactTransactionFunction", "UpsertContactTransactionDeadLetterQueue",
                                 "transactions"),
}
MODES = {
    "today": {"QUALTRICS_BATCH_CONCURRENCY": "1", "RATE_LIMIT_ENABLED": "false"},
    "unlimited": {"QUALTRICS_BATCH_CONCURRENCY": "10", "RATE_LIMIT_ENABLED": "false"},
    "limiter": {"QUALTRICS_BATCH_CONCURRENCY": "10", "RATE_LIMIT_ENABLED": "true"},
}
POST_SIZE = 25


@dataclass
class Row:
    mode: str
    action: str
    limit: int
    calls: float
    delivered: float
    throttled: int
    dead_letters: int
    queued: int
    most_in_window: int


class Feeder(threading.Thread):
    """Posts identify and transaction events to the webhook at fixed rates until stopped."""

    def __init__(self, stack: LocalStack, identify_rate: float, transaction_rate: float, customers: int) -> None:
        super().__init__(daemon=True)
        self.stack, self.stop_event = stack, threading.Event()
        self.rates = (identify_rate, transaction_rate)
        self.customers = customers
        self.sent = 0

    def run(self) -> None:
        # Once a second, that second's events in one request (Segment batches too): the ingest is not measured.
        started, i, due = time.monotonic(), 0, 0.0
        share = self.rates[0] / sum(self.rates)
        while not self.stop_event.wait(max(0.0, started + due / sum(self.rates) + 1 - time.monotonic())):
            want = int((time.monotonic() - started) * sum(self.rates))
            batch = []
            while due < want:
                i += 1
                due += 1
                batch.append(identify(i) if (i * share) % 1 < share else transaction(i, i % self.customers))
            for start in range(0, len(batch), POST_SIZE):
                self.post(batch[start:start + POST_SIZE])

    def post(self, events: list[dict[str, Any]]) -> None:
        body = json.dumps(events).encode()
        signature = hmac.new(self.stack.shared_secret.encode(), body, hashlib.sha1).hexdigest()
        answer = requests.post(self.stack.url, data=body, timeout=60,
                               headers={"Content-Type": "application/json", "X-Signature": signature})
        if answer.status_code == 200:
            self.sent += len(events)


def identify(i: int) -> dict[str, Any]:
    return {"type": "identify", "messageId": f"tp-id-{i}", "userId": f"tp-user-{i}",
            "traits": {"email": f"tp-user-{i}@example.com"}}


def transaction(i: int, customer: int) -> dict[str, Any]:
    # A known contact id: one transactions call per batch, the endpoint whose limit is measured.
    return {"type": "track", "event": "Transaction Created", "messageId": f"tp-tx-{i}", "userId": f"cust-{customer}",
            "traits": {"email": f"cust-{customer}@example.com", "qualtricsContactId": f"CID_cust-{customer}"},
            "properties": {"total": i}}


class Pollers:
    """``workers`` processes per action, each polling its queue and invoking its own process, as Lambda does."""

    def __init__(self, stack: LocalStack, workers: int) -> None:
        self.stack, self.stop_event = stack, threading.Event()
        self.functions: list[LocalFunction] = []
        self.threads: list[threading.Thread] = []
        for function_name, _, _ in ACTIONS.values():
            base = stack.functions[function_name]
            copies = [base] + [LocalFunction(function_name, base.code_dir, base.handler, dict(base.environment),
                                             timeout=base.timeout, memory=base.memory,
                                             on_log=stack._function_log) for _ in range(workers - 1)]
            self.functions += copies[1:]
            for function in copies:
                function.warm()
                self.threads.append(threading.Thread(target=self._poll, args=(function_name, function), daemon=True))

    def _poll(self, name: str, function: LocalFunction) -> None:
        sqs = self.stack.client("sqs")
        while not self.stop_event.is_set():
            try:
                self.stack.deliver(name, sqs, wait=1, function=function)
            except Exception as exc:  # noqa: BLE001 - keep polling, as the event source does
                print(f"poller {name}: {exc}", file=sys.stderr)
                time.sleep(1)

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=60)
        for function in self.functions:
            function.stop()


def most_in_any_window(times: list[float], window: float) -> int:
    times, most, start = sorted(times), 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        most = max(most, end - start + 1)
    return most


def run_mode(stack: LocalStack, mode: str, args: argparse.Namespace, limits: dict[str, int]) -> list[Row]:
    stack.reset()
    sandbox = stack.sandbox.base_url
    enforced = {name: limit for name, limit in limits.items() if limit}   # 0: no such budget, as for the workers
    requests.post(sandbox + "/_sandbox/limits", json={**enforced, "windowSeconds": args.window},
                  timeout=5).raise_for_status()
    requests.post(sandbox + "/_sandbox/latency", json={"seconds": args.latency}, timeout=5).raise_for_status()
    for k in range(args.customers):
        requests.post(sandbox + "/_sandbox/contacts", timeout=5, json={
            "contactId": f"CID_cust-{k}", "extRef": f"cust-{k}", "email": f"cust-{k}@example.com"}).raise_for_status()
    environment = {**MODES[mode], "RATE_LIMIT_WINDOW_SECONDS": str(args.window),
                   **{f"RATE_LIMIT_{name.upper()}": str(value) for name, value in limits.items()}}
    for function_name, _, _ in ACTIONS.values():
        stack.configure(function_name, **environment)
    pollers = Pollers(stack, args.workers)
    feeder = Feeder(stack, args.identify_rate, args.transaction_rate, args.customers)
    started = time.time()
    pollers.start()
    feeder.start()
    time.sleep(args.seconds)
    feeder.stop_event.set()
    feeder.join(timeout=60)
    ended = time.time()
    pollers.stop()
    log = requests.get(sandbox + "/_sandbox/requests", timeout=60).json()["requests"]
    steady = [r for r in log if started + args.warmup <= r["time"] < ended]
    span = ended - started - args.warmup
    rows = []
    for action, (function_name, dead_letter_queue, klass) in ACTIONS.items():
        if klass == "contact_writes":
            mine = [r for r in steady if r["method"] == "POST" and r["path"].endswith("/contacts")]
            events = lambda r: 1  # noqa: E731
        else:
            mine = [r for r in steady if r["method"] == "POST" and r["path"].endswith("/transactions")]
            events = lambda r: len(r["body"] or {})  # noqa: E731
        ok = [r for r in mine if r["status"] is not None and 200 <= r["status"] < 300]
        all_ok = [r for r in log if r["path"] == (mine[0]["path"] if mine else "") and r["status"] == 200]
        queue = stack.workers[function_name]["QueueName"]
        rows.append(Row(
            mode=mode, action=action, limit=limits[klass],
            calls=len(ok) * args.window / span, delivered=sum(map(events, ok)) * args.window / span,
            throttled=sum(1 for r in mine if r["status"] == 429),
            dead_letters=len(stack.dead_letters(dead_letter_queue)),
            queued=stack.queue_depths()[queue],
            most_in_window=most_in_any_window([r["time"] for r in all_ok], args.window),
        ))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="how long events are offered, per mode")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds left out of the figures")
    parser.add_argument("--window", type=float, default=30.0, help="the limits' window (60 = per minute)")
    parser.add_argument("--latency", type=float, default=1.0, help="seconds the sandbox adds to every call")
    parser.add_argument("--workers", type=int, default=2, help="worker processes per action (MaximumConcurrency)")
    parser.add_argument("--contact-writes", type=int, default=120, help="limit per window")
    parser.add_argument("--transactions", type=int, default=15, help="limit per window")
    parser.add_argument("--brand", type=int, default=300, help="limit per window")
    parser.add_argument("--identify-rate", type=float, default=6.0, help="identify events offered per second")
    parser.add_argument("--transaction-rate", type=float, default=4.0, help="transaction events offered per second")
    parser.add_argument("--customers", type=int, default=50)
    parser.add_argument("--modes", default="today,unlimited,limiter")
    args = parser.parse_args()
    limits = {"contact_writes": args.contact_writes, "transactions": args.transactions, "brand": args.brand}
    stack = LocalStack(http_port=0, sandbox_port=0, environment={"RETRY_BASE_SECONDS": "2"}, on_line=lambda _: None)
    stack.start(pollers=False)
    rows: list[Row] = []
    try:
        for mode in args.modes.split(","):
            rows += run_mode(stack, mode, args, limits)
            print(f"{mode}: done", file=sys.stderr, flush=True)
    finally:
        stack.stop()
    print(f"\nThroughput against the limits: {args.workers} worker processes per action, {args.latency:g} s per "
          f"Qualtrics call, limits per {args.window:g} s window (brand {args.brand}), {args.seconds:g} s of "
          f"{args.identify_rate:g} identify + {args.transaction_rate:g} transaction events/s, figures after "
          f"{args.warmup:g} s\n")
    print("| mode | action | limit (calls/window) | calls/window | % of limit | events delivered/window "
          "| most calls in any window | 429s | dead letters | left queued |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r.mode} | {r.action} | {r.limit} | {r.calls:.1f} | {r.calls / r.limit:.0%} | {r.delivered:.1f} "
              f"| {r.most_in_window} | {r.throttled} | {r.dead_letters} | {r.queued} |")


if __name__ == "__main__":
    main()
