"""Wiring of a worker function: settings, subscriptions, Qualtrics client and AWS adapters, built once."""

from __future__ import annotations

from typing import Any

import boto3
from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from .aws import DynamoIdempotencyStore, SqsDeadLetterQueue, SqsVisibility
from .errors import DestinationError
from .executors import AddContactExecutor, WorkflowExecutor
from .observability import MetricUnit, logger, mask, metrics
from .qualtrics import QualtricsClient, QualtricsCredentials
from .settings import WorkerSettings
from .subscriptions import load_subscriptions
from .transactions import TransactionExecutor
from .worker import Delivery, Report, RetryPolicy, Worker

EXECUTORS = {
    "addContactToXmd": AddContactExecutor,
    "upsertContactTransaction": TransactionExecutor,
    "triggerXflowWorkflow": WorkflowExecutor,
}


class RetryRecord(Exception):
    """Raised inside the batch processor for a record that must come back later."""


class WorkerApp:
    def __init__(self, settings: WorkerSettings, worker: Worker) -> None:
        self.settings = settings
        self.worker = worker

    @classmethod
    def from_environment(cls) -> WorkerApp:
        settings = WorkerSettings.from_environ()
        if settings.ACTION_SLUG not in EXECUTORS:
            raise RuntimeError(f"ACTION_SLUG {settings.ACTION_SLUG!r} is not one of {', '.join(EXECUTORS)}")
        subscriptions = {s.name: s for s in load_subscriptions() if s.action.slug == settings.ACTION_SLUG}

        def credentials(force: bool) -> QualtricsCredentials:
            value = parameters.get_secret(settings.QUALTRICS_SECRET_ARN, transform="json", force_fetch=force)
            return QualtricsCredentials.from_secret(value or {})

        client = QualtricsClient(credentials, settings.QUALTRICS_BASE_URL, on_call=_record_call)
        sqs = boto3.client("sqs")
        worker = Worker(
            action=settings.ACTION_SLUG,
            subscriptions=subscriptions,
            executor=EXECUTORS[settings.ACTION_SLUG](client),
            store=DynamoIdempotencyStore(boto3.client("dynamodb"), settings.IDEMPOTENCY_TABLE),
            dead_letters=SqsDeadLetterQueue(sqs, settings.DEAD_LETTER_QUEUE_URL),
            visibility=SqsVisibility(sqs, settings.QUEUE_URL),
            retry=RetryPolicy(max_attempts=settings.MAX_ATTEMPTS, base_seconds=settings.RETRY_BASE_SECONDS),
            on_outcome=_log_outcome,
        )
        return cls(settings, worker)

    def handle(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        records = event.get("Records") or []
        self.worker.lease_seconds = _lease_seconds(context)
        report = self.worker.process([Delivery.from_sqs_record(r) for r in records])
        metrics.add_metric(name="BatchSize", unit=MetricUnit.Count, value=len(records))
        failures = set(report.failure_ids)

        # Powertools builds the partial batch response; the outcome of each record is already known.
        def record_handler(record: SQSRecord) -> None:
            if record.message_id in failures:
                raise RetryRecord(record.message_id)

        processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        return process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                        context=context)

    @staticmethod
    def summary(report: Report) -> dict[str, int]:
        return {"delivered": len(report.delivered), "duplicates": len(report.duplicates),
                "retried": len(report.retried), "deadLettered": len(report.dead_lettered)}


def _lease_seconds(context: Any) -> int:
    # Hold the claim for as long as this invocation can still run, plus a margin.
    try:
        return int(context.get_remaining_time_in_millis() / 1000) + 10
    except Exception:  # noqa: BLE001 - no context (direct calls): the worker timeout's order of size
        return 60


_METRIC_FOR = {"delivered": "MessagesDelivered", "duplicate": "DuplicatesSkipped", "retried": "MessagesRetried",
               "dead_lettered": "MessagesDeadLettered", "dead_letter_failed": "DeadLetterSendFailed"}


def _log_outcome(outcome: str, delivery: Delivery, error: DestinationError | None) -> None:
    message = delivery.message
    extra: dict[str, Any] = {"outcome": outcome, "attempt": delivery.attempt, "sqsMessageId": delivery.record_id}
    if message is not None:
        logger.set_correlation_id(message.message_id)
        extra.update(segmentMessageId=message.message_id, action=message.action,
                     subscription=message.subscription)
    if error is not None:
        extra.update(errorCode=error.code, errorMessage=mask(error.message), httpStatus=error.status,
                     qualtricsRequestId=error.request_id)
    level = logger.info if outcome in ("delivered", "duplicate") else logger.warning
    level(outcome.replace("_", " "), extra=extra)
    metrics.add_metric(name=_METRIC_FOR[outcome], unit=MetricUnit.Count, value=1)
    logger.set_correlation_id(None)


def _record_call(operation: str, status: int | None, seconds: float) -> None:
    metrics.add_metric(name="QualtricsCalls", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="QualtricsLatency", unit=MetricUnit.Milliseconds, value=round(seconds * 1000, 1))
