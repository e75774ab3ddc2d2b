"""Soak: events through the whole local stack under injected faults; counts what was lost or done twice.

Faults, all at once: Qualtrics 5xx before and after it applied a request, 429 with Retry-After, a timeout
after Qualtrics committed (the answer comes later than the client's read timeout), SQS SendMessageBatch
entries refused to the ingest (it answers 503, the sender posts again as Segment does), worker processes
killed part-way through a batch, and the same request posted twice at once (duplicate deliveries).

It reports lost and duplicated contacts and transactions (the guarantee: 0 and 0), and workflow runs per
message against docs/error-model.md (at most one, or two after an ambiguous failure of that call).

    .venv/bin/python bench/soak.py [--events 2000] [--seed 7] [--crashes 10] [--timeouts 2]

tests/integration/test_soak.py runs ``soak()`` with a few hundred events on the test stack.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import random
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # for local/, which is not installed (the package is: pip install -e .)

POST_SIZE = 20                 # events per webhook request
VISIBILITY_SECONDS = 2         # action queues: a crashed batch comes back soon (180 s in the template)
# Worker timeout during the soak: room for a batch's calls after the first (none starts with less than 16.05 s
# left), and a shorter idempotency lease after a crash (it follows the invocation's remaining time). Template: 30.
FUNCTION_TIMEOUT = 22.0
WORKERS = ("AddContactToXmdFunction", "UpsertContactTransactionFunction", "TriggerXflowWorkflowFunction")
ACTION_QUEUES = ("AddContactToXmdQueue", "UpsertContactTransactionQueue", "TriggerXflowWorkflowQueue")
DEAD_LETTER_QUEUES = ("AddContactToXmdDeadLetterQueue", "UpsertContactTransactionDeadLetterQueue",
                      "TriggerXflowWorkflowDeadLetterQueue")


@dataclass
class SoakResult:
    events: int = 0
    posts: int = 0
    reposts_after_5xx: int = 0
    sqs_entries_refused: int = 0
    duplicate_posts: int = 0
    crashes: int = 0
    qualtrics_faults: int = 0
    seconds: float = 0.0
    # lost: neither in Qualtrics nor in a DLQ with its reason (the two outcomes the error model allows)
    lost_contacts: int = 0
    duplicated_contacts: int = 0
    lost_transactions: int = 0
    duplicated_transactions: int = 0
    lost_workflows: int = 0
    workflows_run_twice: int = 0
    workflows_run_more: int = 0
    ambiguous_workflow_failures: int = 0   # upper bound of runs-twice the documented guarantee allows
    dead_letters: int = 0
    dead_letter_reasons: Counter = field(default_factory=Counter)

    def lines(self) -> list[str]:
        return [f"{k:<30} {v}" for k, v in vars(self).items()]


def make_events(count: int, rng: random.Random) -> list[dict[str, Any]]:
    users = [f"soak-user-{i}" for i in range(max(count // 6, 5))]
    events = []
    for i in range(count):
        user = rng.choice(users)
        if i % 3 == 0:
            events.append({"type": "identify", "messageId": f"soak-id-{i}", "userId": user,
                           "traits": {"email": f"{user}@example.com"}, "timestamp": "2026-11-29T10:00:00Z"})
        else:
            events.append({"type": "track", "event": "Transaction Created", "messageId": f"soak-tx-{i}",
                           "userId": user, "traits": {"email": f"{user}@example.com"},
                           "properties": {"orderId": f"soak-ord-{i}", "total": i},
                           "timestamp": "2026-11-29T10:00:00Z"})
    return events


def arm_qualtrics_faults(sandbox_url: str, timeouts: int) -> tuple[int, int]:
    """Faults the workers meet; returns (how many, how many leave a workflow run ambiguous)."""
    faults = [
        {"pathPattern": "/transactions$", "method": "POST", "status": 500, "times": 3, "when": "after"},
        {"pathPattern": "/transactions$", "method": "POST", "status": 503, "times": 2},
        {"pathPattern": "/transactions$", "method": "POST", "status": 429, "times": 2, "retryAfter": 1},
        {"pathPattern": "/contacts/search$", "status": 429, "times": 2, "retryAfter": 1},
        {"pathPattern": "/contacts$", "method": "POST", "status": 500, "times": 2, "when": "after"},
        {"pathPattern": "/contacts$", "method": "POST", "status": 502, "times": 2},
        {"pathPattern": "/triggers$", "status": 500, "times": 3, "when": "after"},
        {"pathPattern": "/triggers$", "status": 502, "times": 2},
    ]
    if timeouts:
        # Committed, then the answer comes after the client's 10 s read timeout: a real timeout.
        faults.append({"pathPattern": "/transactions$", "method": "POST", "status": 0, "times": timeouts,
                       "when": "after", "delaySeconds": 11})
    for spec in faults:
        requests.post(sandbox_url + "/_sandbox/faults", json=spec, timeout=5).raise_for_status()
    ambiguous = sum(f["times"] for f in faults if f["pathPattern"] == "/triggers$" and f.get("when") == "after")
    return sum(f["times"] for f in faults), ambiguous


def soak(stack: Any, *, events: int = 300, seed: int = 7, crashes: int = 3, sqs_fault_batches: int = 4,
         timeouts: int = 0, duplicate_share: float = 0.1, timeout: float = 240.0) -> SoakResult:
    """Run the soak on a started LocalStack (pollers off) whose functions reach SQS through ``stack.sqs_faults``."""
    rng = random.Random(seed)
    result = SoakResult(events=events)
    started = time.monotonic()
    sqs = stack.client("sqs")
    for name in ACTION_QUEUES:
        sqs.set_queue_attributes(QueueUrl=stack.queue_url(name),
                                 Attributes={"VisibilityTimeout": str(VISIBILITY_SECONDS)})
    for name in WORKERS:
        function = stack.functions[name]
        if function.timeout != FUNCTION_TIMEOUT:
            function.stop()
            function.timeout = FUNCTION_TIMEOUT
        function.warm()
    result.qualtrics_faults, ambiguous = arm_qualtrics_faults(stack.sandbox.base_url, timeouts)
    stack.sqs_faults.fail_batches = sqs_fault_batches
    refused_before = stack.sqs_faults.failed_entries

    stop = threading.Event()
    pollers = [threading.Thread(target=_poll, args=(stack, name, stop), daemon=True) for name in WORKERS]
    for thread in pollers:
        thread.start()
    crasher = threading.Thread(target=_crash, args=(stack, crashes, rng.random, stop, result), daemon=True)
    crasher.start()

    stream = make_events(events, rng)
    chunks = [stream[i:i + POST_SIZE] for i in range(0, len(stream), POST_SIZE)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        jobs = []
        for chunk in chunks:
            body = json.dumps(chunk).encode()
            jobs.append(pool.submit(_post_until_accepted, stack, body, result))
            if rng.random() < duplicate_share:
                result.duplicate_posts += 1
                jobs.append(pool.submit(_post_until_accepted, stack, body, result))   # the same, at once
        for job in jobs:
            job.result()

    _wait_until_drained(stack, deadline=started + timeout)
    stop.set()
    crasher.join(timeout=5)
    for thread in pollers:
        thread.join(timeout=FUNCTION_TIMEOUT + 20)
    stack.drain(timeout=max(10.0, started + timeout - time.monotonic()))
    result.seconds = round(time.monotonic() - started, 1)
    result.sqs_entries_refused = stack.sqs_faults.failed_entries - refused_before
    _count(stack, stream, result, ambiguous)
    return result


def _post_until_accepted(stack: Any, body: bytes, result: SoakResult) -> None:
    signature = hmac.new(stack.shared_secret.encode(), body, hashlib.sha1).hexdigest()
    for attempt in range(10):
        answer = requests.post(stack.url, data=body, timeout=30,
                               headers={"Content-Type": "application/json", "X-Signature": signature})
        result.posts += 1
        if answer.status_code < 500:
            assert answer.status_code == 200, answer.text
            return
        result.reposts_after_5xx += 1   # Segment retries a 5xx with the same body
        time.sleep(0.1 * (attempt + 1))
    raise RuntimeError("the ingest kept answering 5xx")


def _poll(stack: Any, name: str, stop: threading.Event) -> None:
    sqs = stack.client("sqs")
    while not stop.is_set():
        try:
            if stack.deliver(name, sqs, window=False) == 0:
                time.sleep(0.1)
        except Exception:  # noqa: BLE001 - a killed process mid-invoke: keep polling, as the event source does
            time.sleep(0.2)


def _crash(stack: Any, crashes: int, random_: Any, stop: threading.Event, result: SoakResult) -> None:
    """Kill worker processes while an invocation is in flight (part-way through a batch)."""
    while result.crashes < crashes and not stop.is_set():
        time.sleep(0.5 + random_())
        busy = [stack.functions[n] for n in WORKERS if stack.functions[n]._lock.locked()]
        if busy:
            busy[int(random_() * len(busy))].crash()
            result.crashes += 1


def _wait_until_drained(stack: Any, deadline: float) -> None:
    while time.monotonic() < deadline:
        depths = stack.queue_depths()
        if not any(depths[q] for q in ACTION_QUEUES):
            return
        time.sleep(0.5)
    raise TimeoutError(f"soak: queues not drained in time: {stack.queue_depths()}")


def _count(stack: Any, stream: list[dict[str, Any]], result: SoakResult, ambiguous: int) -> None:
    # A message in its DLQ with a reason is not lost: the error model's other outcome (a redrive delivers it).
    parked: dict[str, set[str]] = {}   # action -> Segment messageIds dead-lettered with a reason
    for name in DEAD_LETTER_QUEUES:
        for message in stack.dead_letters(name):
            attributes = {k: v.get("StringValue") for k, v in message.get("MessageAttributes", {}).items()}
            result.dead_letters += 1
            result.dead_letter_reasons[attributes.get("errorCode") or "(no reason)"] += 1
            if attributes.get("errorCode"):
                parked.setdefault(attributes.get("action", ""), set()).add(attributes.get("segmentMessageId", ""))
    by_id = {e["messageId"]: e for e in stream}

    def parked_for(action: str, key: str) -> set[str]:
        return {by_id[m][key] if key != "messageId" else m for m in parked.get(action, ()) if m in by_id}

    state = requests.get(stack.sandbox.base_url + "/_sandbox/state", timeout=10).json()
    directory = state["directories"]["POOL_SANDBOX"]
    users = {e["userId"] for e in stream} - parked_for("addContactToXmd", "userId")
    contacts = Counter(c.get("extRef") for c in directory["contacts"] if str(c.get("extRef", "")).startswith("soak-"))
    result.lost_contacts = len(users - set(contacts))
    result.duplicated_contacts = sum(n - 1 for n in contacts.values())

    expected = {e["messageId"] for e in stream if e["type"] == "track"} - parked_for("upsertContactTransaction",
                                                                                      "messageId")
    recorded = Counter((t.get("data") or {}).get("segmentMessageId") for t in directory["transactions"])
    result.lost_transactions = len(expected - set(recorded))
    result.duplicated_transactions = sum(recorded[m] - 1 for m in expected if recorded[m] > 1)

    orders = {e["properties"]["orderId"] for e in stream if e["type"] == "track"} - {
        by_id[m]["properties"]["orderId"] for m in parked.get("triggerXflowWorkflow", ()) if m in by_id}
    runs = Counter(((r.get("body") or {}).get("properties") or {}).get("orderId") for r in state["workflowRuns"])
    result.lost_workflows = len(orders - set(runs))
    result.workflows_run_twice = sum(1 for o in orders if runs[o] == 2)
    result.workflows_run_more = sum(1 for o in orders if runs[o] > 2)
    # Each crash may leave one workflow call in flight; each "after" fault leaves one run unanswered.
    result.ambiguous_workflow_failures = ambiguous + result.crashes



def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--crashes", type=int, default=10)
    parser.add_argument("--timeouts", type=int, default=2, help="Qualtrics calls that time out after committing")
    parser.add_argument("--sqs-fault-batches", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds before the soak gives up")
    args = parser.parse_args()

    from local.stack import LocalStack
    from tests.integration.sqs_faults import SqsFaultProxy

    stack = LocalStack(http_port=0, sandbox_port=0, environment={"RETRY_BASE_SECONDS": "0"}, on_line=lambda _: None)
    proxy = SqsFaultProxy(stack.endpoint_url).start()
    stack.extra_environment["AWS_ENDPOINT_URL_SQS"] = proxy.url
    stack.start(pollers=False)
    stack.sqs_faults = proxy
    try:
        result = soak(stack, events=args.events, seed=args.seed, crashes=args.crashes, timeouts=args.timeouts,
                      sqs_fault_batches=args.sqs_fault_batches, timeout=args.timeout)
    finally:
        stack.stop()
        proxy.stop()
    print("\n".join(result.lines()))
    print(f"{'events per second':<30} {result.events / result.seconds:.1f}")
    ok = (result.lost_contacts == result.duplicated_contacts == result.lost_transactions
          == result.duplicated_transactions == result.lost_workflows == result.workflows_run_more == 0
          and result.workflows_run_twice <= result.ambiguous_workflow_failures)
    print("guarantees held" if ok else "GUARANTEES BROKEN")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
