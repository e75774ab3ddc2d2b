"""Qualtrics API calls per delivered event, ours next to Segment's, on fixed seeded streams.

Drives each stream through the real handlers (the local stack: moto + the Qualtrics sandbox + one
process per function), counts the requests the sandbox received, and computes what Segment's
Qualtrics (Actions) destination makes for the same stream: 1 call per contact, 1 per workflow, and
1, 2 or 3 per transaction (transaction only; search + transaction; search + create + transaction).

    .venv/bin/python bench/api_calls.py [--events 200] [--seed 7]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import random
import sys
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # for local/, which is not installed (the package is: pip install -e .)

from local.stack import LocalStack  # noqa: E402

POST_SIZE = 50   # events per webhook request (Segment's Webhooks (Actions) batches); SQS batches are 10


def identify(i: int, user: str) -> dict:
    return {"type": "identify", "messageId": f"id-{i}", "userId": user,
            "traits": {"email": f"{user}@example.com", "firstName": "F"}, "timestamp": "2026-11-29T10:00:00Z"}


def transaction(i: int, user: str, contact_id: str | None = None) -> dict:
    traits = {"email": f"{user}@example.com"}
    if contact_id:
        traits["qualtricsContactId"] = contact_id
    return {"type": "track", "event": "Transaction Created", "messageId": f"tx-{i}", "userId": user,
            "traits": traits, "properties": {"total": i}, "timestamp": "2026-11-29T10:00:00Z"}


def streams(n: int, rng: random.Random) -> dict[str, tuple[list[str], list[dict], str]]:
    """name -> (users to seed as existing contacts, events, action measured)."""
    customers = [f"cust-{k}" for k in range(max(5, n // 10))]
    return {
        "addContactToXmd (identify)": ([], [identify(i, f"user-{rng.randrange(n)}") for i in range(n)],
                                       "addContactToXmd"),
        "upsertContactTransaction, contactId known": (
            customers, [transaction(i, u, contact_id=f"CID_{u}") for i, u in
                        enumerate(rng.choice(customers) for _ in range(n))], "upsertContactTransaction"),
        "upsertContactTransaction, returning customers": (
            customers, [transaction(i, rng.choice(customers)) for i in range(n)], "upsertContactTransaction"),
        "upsertContactTransaction, new customers": (
            [], [transaction(i, f"new-{i}") for i in range(n)], "upsertContactTransaction"),
        "triggerXflowWorkflow": ([], [transaction(i, f"wf-{i}") for i in range(n)], "triggerXflowWorkflow"),
    }


def segment_calls(action: str, events: list[dict], existing: set[str]) -> int:
    if action != "upsertContactTransaction":
        return len(events)
    calls, known = 0, set(existing)
    for event in events:
        if event["traits"].get("qualtricsContactId"):
            calls += 1
        elif event["userId"] in known:
            calls += 2
        else:
            calls += 3
            known.add(event["userId"])
    return calls


def our_calls(stack: LocalStack, action: str) -> tuple[int, int]:
    log = requests.get(stack.sandbox.base_url + "/_sandbox/requests", timeout=10).json()["requests"]
    log = [r for r in log if r["status"] < 400]
    if action == "triggerXflowWorkflow":
        calls = [r for r in log if r["path"].startswith("/inbound-event/")]
    elif action == "addContactToXmd":
        calls = [r for r in log if r["path"].endswith("/contacts")]
    else:
        calls = [r for r in log if "/directories/" in r["path"]]
    state = requests.get(stack.sandbox.base_url + "/_sandbox/state", timeout=10).json()
    delivered = {"addContactToXmd": len(calls),
                 "upsertContactTransaction": len(state["directories"]["POOL_SANDBOX"]["transactions"]),
                 "triggerXflowWorkflow": len(state["workflowRuns"])}[action]
    return len(calls), delivered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    stack = LocalStack(http_port=0, sandbox_port=0, environment={"RETRY_BASE_SECONDS": "0"}, on_line=lambda _: None)
    stack.start(pollers=False)
    rows = []
    try:
        for name, (seeded, events, action) in streams(args.events, rng).items():
            stack.reset()
            for user in seeded:
                requests.post(stack.sandbox.base_url + "/_sandbox/contacts", timeout=5, json={
                    "contactId": f"CID_{user}", "extRef": user, "email": f"{user}@example.com"}).raise_for_status()
            # Only the measured action's subscription matters; the others' calls are filtered out by path.
            for start in range(0, len(events), POST_SIZE):
                body = json.dumps(events[start:start + POST_SIZE]).encode()
                signature = hmac.new(stack.shared_secret.encode(), body, hashlib.sha1).hexdigest()
                answer = requests.post(stack.url, data=body, timeout=60,
                                       headers={"Content-Type": "application/json", "X-Signature": signature})
                answer.raise_for_status()
            stack.drain(timeout=300)
            calls, delivered = our_calls(stack, action)
            ours_per_event = calls / delivered if delivered else float("nan")
            theirs = segment_calls(action, events, set(seeded)) / len(events)
            rows.append((name, len(events), delivered, calls, ours_per_event, theirs))
    finally:
        stack.stop()
    print(f"\nQualtrics API calls per delivered event ({args.events} events per stream, seed {args.seed}, "
          f"SQS batch size 10)\n")
    print("| stream | events | delivered | our calls | ours / event | Segment / event | ours vs Segment |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, n, delivered, calls, ours, theirs in rows:
        print(f"| {name} | {n} | {delivered} | {calls} | {ours:.2f} | {theirs:.2f} | {ours / theirs:.0%} |")


if __name__ == "__main__":
    main()
