"""The DLQ tool (segment_qualtrics.tools.dlq and its CLI) against the local stack.

A Qualtrics 400 puts an identify's addContactToXmd message in the dead-letter queue with its reason; the
tool lists it, redrives it once the cause is gone (the event then lands exactly once), filters by error
code and age, and purges. The stack is conftest's session stack, reset once for this module; between tests
only the dead-letter queue and the sandbox's faults are cleared (each test has its own messageIds and users),
so the functions stay warm.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from segment_qualtrics.destination.actions import ACTIONS
from segment_qualtrics.tools import cli, dlq_commands
from segment_qualtrics.tools.dlq import ActionQueues, Selection, peek, purge, redrive

from local.stack import LocalStack

ACTION = "addContactToXmd"
DLQ = "AddContactToXmdDeadLetterQueue"


@pytest.fixture(scope="module")
def module_stack(running_stack: LocalStack) -> LocalStack:
    running_stack.reset()
    return running_stack


@pytest.fixture
def sqs(module_stack: LocalStack):
    return module_stack.client("sqs")


@pytest.fixture
def queues(module_stack: LocalStack) -> ActionQueues:
    return ActionQueues(ACTION, module_stack.queue_url("AddContactToXmdQueue"), module_stack.queue_url(DLQ))


@pytest.fixture
def stack(module_stack: LocalStack, sqs, queues: ActionQueues) -> LocalStack:
    purge(sqs, queues, per_message=True)   # SQS (and moto) allow one PurgeQueue a minute per queue
    requests.delete(f"{module_stack.sandbox.base_url}/_sandbox/faults", timeout=5).raise_for_status()
    return module_stack


# ------------------------------------------------------------------------------------------------ helpers

def post(stack: LocalStack, event: dict[str, Any]) -> requests.Response:
    body = json.dumps(event).encode()
    signature = hmac.new(stack.shared_secret.encode(), body, hashlib.sha1).hexdigest()
    answer = requests.post(stack.url, data=body, timeout=15,
                           headers={"Content-Type": "application/json", "X-Signature": signature})
    assert answer.status_code == 200, answer.text
    return answer


def identify(user: str) -> dict[str, Any]:
    return {"type": "identify", "messageId": f"dlq-{uuid.uuid4()}", "userId": user,
            "traits": {"email": f"{user}@example.com", "firstName": "Dee", "lastName": "Elcue"},
            "timestamp": "2026-11-29T10:00:00.000Z"}


def fault(stack: LocalStack, status: int = 400) -> None:
    requests.post(f"{stack.sandbox.base_url}/_sandbox/faults", timeout=5,
                  json={"pathPattern": "/contacts$", "status": status, "times": 1}).raise_for_status()


def dead_letter_one(stack: LocalStack) -> dict[str, Any]:
    """An identify whose contact creation Qualtrics refuses once (400): it ends in the DLQ."""
    event = identify(f"user-{uuid.uuid4().hex[:8]}")
    fault(stack)
    post(stack, event)
    stack.drain()
    return event


def contact_posts(stack: LocalStack, user: str) -> list[dict[str, Any]]:
    log = requests.get(f"{stack.sandbox.base_url}/_sandbox/requests", timeout=5).json()
    log = log.get("requests", log) if isinstance(log, dict) else log
    return [r for r in log if r["method"] == "POST" and r["path"].endswith("/contacts")
            and (r.get("body") or {}).get("extRef") == user]


def contacts(stack: LocalStack, user: str) -> list[dict[str, Any]]:
    state = requests.get(f"{stack.sandbox.base_url}/_sandbox/state", timeout=5).json()
    found = []
    for directory in state["directories"].values():
        found += [c for c in directory["contacts"] if c["extRef"] == user]
    return found


def run_cli(stack: LocalStack, tmp_path: Path, *argv: str, answer: str = "") -> tuple[int, str, str]:
    # The CLI finds the local stack through a state file; this one is the test's (the shared one is anybody's).
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"awsEndpointUrl": stack.endpoint_url,
                                 "queues": {n: stack.queue_url(n) for n in stack.queue_depths()}}))
    out, err = io.StringIO(), io.StringIO()
    status = cli.main(["dlq", *argv, "--state", str(state)], out=out, err=err, ask=lambda prompt: answer)
    return status, out.getvalue(), err.getvalue()


# ------------------------------------------------------------------------------------------------ tests

def test_a_qualtrics_400_is_listed_with_its_reason(stack: LocalStack, sqs, queues: ActionQueues) -> None:
    event = dead_letter_one(stack)
    [letter] = peek(sqs, queues)
    row = letter.describe(ACTION)
    assert row["segmentMessageId"] == event["messageId"]
    assert (row["errorCode"], row["httpStatus"], row["eventType"]) == ("qualtrics_rejected", 400, "identify")
    assert "400" in row["errorMessage"] and row["qualtricsRequestId"]
    assert row["subscription"] == "Create or update contact"
    assert 0 <= row["ageSeconds"] < 600
    # Listing leaves the message where it was, visible.
    assert [m.sqs_message_id for m in peek(sqs, queues)] == [letter.sqs_message_id]
    assert contacts(stack, event["userId"]) == []


def test_redrive_after_the_fix_delivers_the_event_exactly_once(stack: LocalStack, sqs, queues: ActionQueues) -> None:
    event = dead_letter_one(stack)
    user = event["userId"]
    assert [p["status"] for p in contact_posts(stack, user)] == [400]

    # Filters that do not match leave it alone.
    assert redrive(sqs, queues, Selection(codes=frozenset({"qualtrics_unauthorized"}))).moved == 0
    assert redrive(sqs, queues, Selection(older_than_seconds=3600)).moved == 0
    assert len(peek(sqs, queues)) == 1

    # The cause is gone (the fault was used up; the fixture also cleared faults): redrive by its code.
    result = redrive(sqs, queues, Selection(codes=frozenset({"qualtrics_rejected"})))
    assert (result.method, result.moved, result.failed) == ("message-by-message", 1, 0)
    assert peek(sqs, queues) == []
    stack.drain()

    assert [p["status"] for p in contact_posts(stack, user)] == [400, 200]
    assert len(contacts(stack, user)) == 1
    assert peek(sqs, queues) == []

    # Redriving nothing changes nothing; a second delivery would be skipped as a duplicate anyway.
    assert redrive(sqs, queues).moved == 0


def test_unfiltered_redrive_falls_back_when_move_tasks_are_missing(stack: LocalStack, sqs,
                                                                    queues: ActionQueues) -> None:
    first, second = dead_letter_one(stack), dead_letter_one(stack)
    assert len(peek(sqs, queues)) == 2
    result = redrive(sqs, queues)   # moto has no StartMessageMoveTask: message by message instead
    assert (result.method, result.moved) == ("message-by-message", 2)
    assert any("move tasks unavailable" in note for note in result.notes)
    stack.drain()
    for event in (first, second):
        assert len(contacts(stack, event["userId"])) == 1
    assert peek(sqs, queues) == []


def test_a_message_that_still_fails_returns_to_the_dlq_with_its_reason(stack: LocalStack, sqs,
                                                                       queues: ActionQueues) -> None:
    event = dead_letter_one(stack)
    fault(stack, status=404)   # not fixed after all
    assert redrive(sqs, queues).moved == 1
    stack.drain()
    [again] = peek(sqs, queues)
    assert (again.segment_message_id, again.attributes["httpStatus"]) == (event["messageId"], "404")
    assert contacts(stack, event["userId"]) == []


def test_a_copy_of_a_message_is_moved_once_per_run_and_delivered_once(stack: LocalStack, sqs,
                                                                      queues: ActionQueues) -> None:
    # Two copies of one dead letter (a delete that failed after an earlier redrive leaves one behind).
    event = dead_letter_one(stack)
    [letter] = peek(sqs, queues)
    sqs.send_message(QueueUrl=queues.dead_letter_queue_url, MessageBody=letter.body,
                     MessageAttributes=letter.attributes_to_send())
    result = redrive(sqs, queues)
    assert (result.moved, result.skipped) == (1, 1)   # the copy could also be a fresh failure: never dropped
    stack.drain()
    assert redrive(sqs, queues).moved == 1
    stack.drain()
    # Delivered once: the second delivery is a duplicate for the worker's idempotency key.
    assert [p["status"] for p in contact_posts(stack, event["userId"])] == [400, 200]
    assert peek(sqs, queues) == []


def test_purge_with_a_filter_deletes_only_what_matches(stack: LocalStack, sqs, queues: ActionQueues) -> None:
    dead_letter_one(stack)
    result = purge(sqs, queues, Selection(codes=frozenset({"network_error"})))
    assert (result.deleted, result.skipped) == (0, 1)
    assert purge(sqs, queues, Selection(codes=frozenset({"qualtrics_rejected"}))).deleted == 1
    assert peek(sqs, queues) == []


def test_cli_lists_as_json_and_filters(stack: LocalStack, tmp_path: Path) -> None:
    event = dead_letter_one(stack)
    status, out, _ = run_cli(stack, tmp_path, "list", "--json", "--action", ACTION)
    assert status == 0
    [row] = json.loads(out)
    assert (row["segmentMessageId"], row["errorCode"], row["httpStatus"]) == (event["messageId"],
                                                                               "qualtrics_rejected", 400)
    status, out, _ = run_cli(stack, tmp_path, "list", "--json", "--code", "qualtrics_timeout")
    assert (status, json.loads(out)) == (0, [])
    status, out, _ = run_cli(stack, tmp_path, "list")
    assert status == 0
    assert f"{ACTION}: 1 dead letter(s)" in out and "qualtrics_rejected" in out and event["messageId"] in out
    assert "upsertContactTransaction: 0 dead letter(s)" in out


def test_cli_purge_asks_first(stack: LocalStack, sqs, queues: ActionQueues, tmp_path: Path) -> None:
    dead_letter_one(stack)
    status, _, err = run_cli(stack, tmp_path, "purge", "--action", ACTION, answer="n")
    assert status == 1 and "Not purged" in err
    assert len(peek(sqs, queues)) == 1
    status, out, _ = run_cli(stack, tmp_path, "purge", "--action", ACTION, answer="y")
    assert status == 0 and f"{ACTION}: 1 dead letter(s) deleted" in out
    assert peek(sqs, queues) == []


def test_cli_redrive_and_purge_yes(stack: LocalStack, sqs, queues: ActionQueues, tmp_path: Path) -> None:
    event = dead_letter_one(stack)
    status, out, _ = run_cli(stack, tmp_path, "redrive", "--code", "qualtrics_rejected", "--action", ACTION)
    assert status == 0 and "1 message(s) sent back" in out
    stack.drain()
    assert len(contacts(stack, event["userId"])) == 1
    dead_letter_one(stack)
    status, out, _ = run_cli(stack, tmp_path, "purge", "--yes")
    assert status == 0 and f"{ACTION}: 1 dead letter(s) deleted" in out
    assert peek(sqs, queues) == []


def test_cli_reports_a_missing_local_stack(tmp_path: Path) -> None:
    err = io.StringIO()
    status = cli.main(["dlq", "list", "--state", str(tmp_path / "absent.json")], out=io.StringIO(), err=err)
    assert status == 1 and "make run" in err.getvalue()


def test_cli_redrive_says_what_it_did_once(stack: LocalStack, sqs, queues: ActionQueues, tmp_path: Path) -> None:
    # Nothing anywhere: one line per queue, no word about move tasks.
    status, out, _ = run_cli(stack, tmp_path, "redrive")
    assert status == 0 and "unavailable" not in out
    assert out.count("nothing to redrive") == len(ACTIONS)   # one line per action queue
    # Letters in two DLQs. The local stack's moto has no move tasks: not even asked, nothing said.
    dead_letter_one(stack)
    other = stack.queue_url("UpsertContactTransactionDeadLetterQueue")
    [letter] = peek(sqs, queues)
    sqs.send_message(QueueUrl=other, MessageBody=letter.body, MessageAttributes=letter.attributes_to_send())
    status, out, _ = run_cli(stack, tmp_path, "redrive", "--no-wait")
    assert status == 0 and "move tasks" not in out and out.count("1 message(s) sent back") == 2, out
    stack.drain()
    # An endpoint that lacks them although it should (a deployed stack): said once, not per queue.
    dead_letter_one(stack)
    [letter] = peek(sqs, queues)
    sqs.send_message(QueueUrl=other, MessageBody=letter.body, MessageAttributes=letter.attributes_to_send())
    state = json.loads((tmp_path / "state.json").read_text())
    target = dlq_commands.Target("a stack", stack.client, state=state, move_tasks=True)
    out = io.StringIO()
    assert cli.main(["dlq", "redrive", "--no-wait"], out=out, err=io.StringIO(), target=target) == 0
    assert out.getvalue().count("move tasks unavailable") == 1, out.getvalue()
    stack.drain()
    purge(sqs, ActionQueues("upsertContactTransaction", stack.queue_url("UpsertContactTransactionQueue"), other),
          per_message=True)   # the copies were no transactions: they dead-letter again there


def test_cli_purge_twice_within_a_minute_is_quiet(stack: LocalStack, sqs, queues: ActionQueues,
                                                  tmp_path: Path) -> None:
    for _ in range(2):   # SQS allows one PurgeQueue a minute per queue: the second finishes message by message
        dead_letter_one(stack)
        status, out, err = run_cli(stack, tmp_path, "purge", "--yes", "--action", ACTION)
        assert status == 0 and f"{ACTION}: 1 dead letter(s) deleted" in out
        assert "PurgeQueue" not in out + err and "InProgress" not in out + err
    status, out, _ = run_cli(stack, tmp_path, "purge", "--yes")   # empty queues: no PurgeQueue call at all
    assert status == 0 and out.count("0 dead letter(s) deleted") == len(ACTIONS) and "PurgeQueue" not in out
