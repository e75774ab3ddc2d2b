"""The brand's rate limit in DynamoDB (moto over HTTP, the idempotency table): the store contract, several
worker processes spending one budget (never over it), and rate-limited messages through the real workers
(handed back, never dead-lettered, no 429 from the sandbox)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests
from segment_qualtrics.adapters.dynamodb_rate_limit import DynamoRateLimitStore
from segment_qualtrics.delivery.rate_limit import Budget

from local.stack import LocalStack
from tests.unit.rate_limit_contract import RateLimitStoreContract, most_in_any_window

ROOT = Path(__file__).resolve().parents[2]
TABLE = "IdempotencyTable"


class TestDynamoStore(RateLimitStoreContract):
    @pytest.fixture
    def store(self, running_stack: LocalStack) -> DynamoRateLimitStore:
        # Budget names are unique per test: no reset needed, and the stack's other tests are not disturbed.
        return DynamoRateLimitStore(running_stack.client("dynamodb"), TABLE)

    def test_a_budget_is_one_item_in_the_idempotency_table(self, running_stack: LocalStack) -> None:
        dynamodb = running_stack.client("dynamodb")
        store, name = DynamoRateLimitStore(dynamodb, TABLE), f"item-{uuid.uuid4().hex}"
        assert store.take(name, Budget(10, 1.0), 1_800_000_000.0) == 0.0
        item = dynamodb.get_item(TableName=TABLE, Key={"id": {"S": f"rate-limit#{name}"}})["Item"]
        assert set(item) == {"id", "tat", "expiration"}
        assert int(item["expiration"]["N"]) == 1_800_000_000 + 24 * 3600   # the table's TTL removes it


def test_several_processes_share_one_budget_and_never_overspend_it(running_stack: LocalStack) -> None:
    """Four worker processes hammer one 40-calls-per-2-s budget for 5 s: together they never pass it."""
    limit, window, seconds, processes = 40, 2.0, 5.0, 4
    name = uuid.uuid4().hex
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "common"), str(ROOT)])}
    command = [sys.executable, "-m", "tests.integration.rate_limit_hammer", running_stack.endpoint_url, TABLE, name,
               str(limit), str(window), str(seconds)]
    running = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                cwd=ROOT) for _ in range(processes)]
    outputs = []
    for process in running:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    assert all(not o["errors"] for o in outputs)   # the store answered every time: nothing went unchecked
    admitted = [t for o in outputs for t in o["admitted"]]
    assert all(o["admitted"] for o in outputs)     # every process got calls: one budget, shared
    assert len(admitted) >= limit                  # it did spend the budget (no vacuous pass)
    assert most_in_any_window(admitted, window) <= Budget(limit, window).spendable


# --- through the real workers ----------------------------------------------------------------------

def identify(i: int) -> dict:
    return {"type": "identify", "messageId": f"rl-{i}", "userId": f"rl-user-{i}",
            "traits": {"email": f"rl-{i}@example.com"}}


def test_an_overloaded_worker_delivers_everything_without_429s_or_dead_letters(stack: LocalStack, client) -> None:
    """The sandbox allows 6 contact writes per 2 s; so does the limiter. 30 identify events at once: every one
    lands, the sandbox refuses none, and the ones that found no call left came back later, never to the DLQ."""
    requests.post(stack.sandbox.base_url + "/_sandbox/limits", json={"contact_writes": 6, "windowSeconds": 2},
                  timeout=5).raise_for_status()
    stack.configure("AddContactToXmdFunction", RATE_LIMIT_CONTACT_WRITES="6", RATE_LIMIT_WINDOW_SECONDS="2",
                    QUALTRICS_BATCH_CONCURRENCY="5")
    answer = client.post([identify(i) for i in range(30)])
    assert answer.status_code == 200, answer.text
    stack.drain(timeout=240)
    contacts = client.contacts()
    assert sorted(c["extRef"] for c in contacts) == sorted(f"rl-user-{i}" for i in range(30))
    stats = requests.get(stack.sandbox.base_url + "/_sandbox/stats", timeout=5).json()
    assert stats["total"]["status429"] == 0
    assert client.dead_letters("AddContactToXmdDeadLetterQueue") == []
    lines = [json.loads(line) for line in stack.log_lines if line.startswith("{")]
    handed_back = [line for line in lines if line.get("outcome") in ("rate_limited", "requeued")]
    waited = [line for line in lines if "RateLimitWaits" in line]
    assert handed_back or waited   # the limiter did hold calls back (30 calls into a 6-per-2-s budget)
