"""The worker's outcomes have one name each (delivery/outcomes.py): the values operators query in the logs,
the log line's message, its level and the metric each one counts in, and no bare outcome string elsewhere."""

from __future__ import annotations

import ast
import json
import logging
import sys
from pathlib import Path

import pytest
from segment_qualtrics.delivery.outcomes import DeleteResult, Outcome
from segment_qualtrics.delivery.worker import QueuedWork
from segment_qualtrics.destination.envelope import QueueMessage
from segment_qualtrics.destination.errors import PermanentError
from segment_qualtrics.ingest.core import Rejection
from segment_qualtrics.runtime.observability import Metric, logger, metrics
from segment_qualtrics.runtime.worker_app import WorkerObserver

from local.stack import render_log_line

PACKAGE = Path(__file__).resolve().parents[2] / "layers" / "common" / "segment_qualtrics"


def test_the_logged_values_are_the_ones_operators_query():
    assert [o.value for o in Outcome] == ["delivered", "duplicate", "deferred", "retried", "dead_lettered",
                                          "dead_letter_failed", "complete_failed", "rate_limited", "requeued"]
    assert Outcome.DEAD_LETTERED.label == "dead lettered" and Outcome.DELIVERED.label == "delivered"
    assert [r.value for r in DeleteResult] == ["deleted", "already_deleted", "not_found"]
    assert [r.value for r in Rejection] == ["invalid_event", "event_too_large"]


@pytest.fixture
def log_lines(capsys):
    class Stdout:
        def write(self, text: str) -> None:
            sys.stdout.write(text)

        def flush(self) -> None:
            sys.stdout.flush()

    handler = logging.StreamHandler(Stdout())
    handler.setFormatter(logger.registered_formatter)
    logger.addHandler(handler)
    yield lambda: [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    logger.removeHandler(handler)
    metrics.clear_metrics()


def work(sqs_message_id: str) -> QueuedWork:
    event = {"type": "identify", "messageId": "seg-1", "userId": "user-1"}
    queued = QueueMessage("upsertContact", "Contacts", "seg-1", "2024-01-01T00:00:00Z", event)
    item = QueuedWork.from_sqs_record({"messageId": sqs_message_id, "receiptHandle": "rh", "body": queued.to_json()})
    item.message = queued
    return item


# The per-action metrics each outcome adds to (the rate-limit hand-backs and the per-reason counts are filed
# in their own blobs); deferred and complete_failed are warnings only.
COUNTED_IN = {
    Outcome.DELIVERED: {Metric.MESSAGES_DELIVERED.value}, Outcome.DUPLICATE: {Metric.DUPLICATES_SKIPPED.value},
    Outcome.RETRIED: {Metric.MESSAGES_RETRIED.value}, Outcome.DEAD_LETTERED: {Metric.MESSAGES_DEAD_LETTERED.value},
    Outcome.DEAD_LETTER_FAILED: {Metric.DEAD_LETTER_SEND_FAILED.value}, Outcome.DEFERRED: set(),
    Outcome.COMPLETE_FAILED: set(), Outcome.RATE_LIMITED: set(), Outcome.REQUEUED: set(),
}


@pytest.mark.parametrize("outcome", list(Outcome))
def test_each_outcome_is_logged_under_its_value_and_label_and_counted_once(outcome, log_lines):
    metrics.clear_metrics()
    error = None if outcome in (Outcome.DELIVERED, Outcome.DUPLICATE, Outcome.DEFERRED) \
        else PermanentError("qualtrics_rejected", "no")
    WorkerObserver("upsertContact").outcome(outcome, work("sqs-1"), error)
    [line] = log_lines()
    assert (line["message"], line["outcome"], line["sqsMessageId"]) == (outcome.label, outcome.value, "sqs-1")
    assert line["level"] == ("INFO" if outcome.is_routine else "WARNING")
    counted = {name for name, spec in metrics.metric_set.items() if spec["Value"]}
    assert counted == COUNTED_IN[outcome]


def test_no_bare_outcome_string_is_left_in_the_package():
    """Every outcome (and its old spellings) is written once, in delivery/outcomes.py; the rest use the enum."""
    spelled = {*map(str, Outcome), *map(str, DeleteResult), "dead-lettered", "dead lettered"}
    found = [f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}"
             for path in sorted(PACKAGE.rglob("*.py")) if path.name != "outcomes.py"
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Constant) and node.value in spelled]
    assert found == []


def test_the_local_stack_prints_each_outcome_as_logged():
    line = json.dumps({"level": "WARNING", "message": Outcome.DEAD_LETTERED.label, "outcome": "dead_lettered",
                       "action": "addContactToXmd", "segmentMessageId": "m-8", "attempt": 1,
                       "errorCode": "qualtrics_rejected"})
    shown = render_log_line("AddContactToXmdFunction", line)
    assert shown is not None and shown.split()[:2] == ["AddContactToXmd", "dead_lettered"] and "attempt=1" in shown
