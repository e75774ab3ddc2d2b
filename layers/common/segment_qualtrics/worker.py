"""The worker core: deliver one SQS batch of queue messages to Qualtrics, with the error model.

Every message ends in exactly one outcome (docs/architecture.md, "Error model"):
- delivered (or a duplicate of a delivered one): deleted by Lambda as a batch success;
- dead-lettered: a permanent error, or a transient one on the last allowed attempt; sent to the DLQ
  with its reason in message attributes, then reported as a success so Lambda deletes it;
- retried: a transient error; its visibility is set to the backoff delay and it is reported failed.

The core takes its adapters (Qualtrics client, idempotency store, dead-letter queue, visibility) as
parameters, so tests wire real adapters against local servers or small fakes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .envelope import EnvelopeError, QueueMessage
from .errors import DestinationError, PermanentError, RetryableError
from .idempotency import ClaimState, IdempotencyStore
from .subscriptions import Subscription

MAX_VISIBILITY_SECONDS = 12 * 3600 - 1


@dataclass
class Delivery:
    """One SQS record on its way through the worker."""

    record_id: str              # SQS messageId: the batchItemFailures identifier
    receipt_handle: str
    body: str
    attempt: int                # ApproximateReceiveCount
    attributes: dict[str, Any] = field(default_factory=dict)
    message: QueueMessage | None = None
    subscription: Subscription | None = None
    payload: Any = None
    recovering: bool = False    # an earlier attempt may already have reached Qualtrics

    @classmethod
    def from_sqs_record(cls, record: dict[str, Any]) -> Delivery:
        attrs = record.get("attributes") or {}
        return cls(
            record_id=record["messageId"],
            receipt_handle=record.get("receiptHandle", ""),
            body=record.get("body", ""),
            attempt=int(attrs.get("ApproximateReceiveCount", "1") or 1),
            attributes=record.get("messageAttributes") or {},
        )


class DeadLetterQueue(Protocol):
    def send(self, body: str, attributes: dict[str, dict[str, str]]) -> None: ...


class VisibilityControl(Protocol):
    def delay(self, receipt_handle: str, seconds: int) -> None: ...


class Executor(Protocol):
    """An action's Qualtrics work for a batch. Returns an error per failed delivery (absent = delivered)."""

    def execute(self, deliveries: Sequence[Delivery]) -> dict[str, DestinationError]: ...


@dataclass
class RetryPolicy:
    max_attempts: int = 5
    base_seconds: float = 30.0
    cap_seconds: float = 900.0
    jitter: Callable[[], float] = random.random

    def delay(self, attempt: int, error: DestinationError) -> int:
        """Exponential backoff with jitter; never sooner than Qualtrics' Retry-After."""
        backoff = min(self.cap_seconds, self.base_seconds * 2 ** max(attempt - 1, 0))
        backoff = backoff * (0.5 + self.jitter() / 2)
        if error.retry_after is not None:
            backoff = max(backoff, error.retry_after)
        # Round up: rounding 2.5 s down to 2 would come back before Retry-After.
        return int(min(MAX_VISIBILITY_SECONDS, max(1, math.ceil(backoff))))


@dataclass
class Report:
    """What happened to each record: used for the partial batch response, logs and metrics."""

    delivered: list[Delivery] = field(default_factory=list)
    duplicates: list[Delivery] = field(default_factory=list)
    retried: list[tuple[Delivery, DestinationError, int]] = field(default_factory=list)
    dead_lettered: list[tuple[Delivery, DestinationError]] = field(default_factory=list)
    failed: list[Delivery] = field(default_factory=list)   # left for SQS to redeliver (e.g. DLQ send failed)

    @property
    def failure_ids(self) -> list[str]:
        return [d.record_id for d, _, _ in self.retried] + [d.record_id for d in self.failed]


@dataclass
class Worker:
    action: str
    subscriptions: dict[str, Subscription]
    executor: Executor
    store: IdempotencyStore
    dead_letters: DeadLetterQueue
    visibility: VisibilityControl
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    lease_seconds: int = 60
    on_outcome: Callable[[str, Delivery, DestinationError | None], None] | None = None

    def process(self, deliveries: Sequence[Delivery]) -> Report:
        report = Report()
        ready: list[Delivery] = []
        in_batch: set[str] = set()
        for delivery in deliveries:
            error = self._prepare(delivery)
            if error is not None:
                self._fail(delivery, error, report, claimed=False)
                continue
            key = delivery.message.idempotency_key
            if key in in_batch:
                # The same event twice in one batch: the first copy carries it (delivered, retried or
                # dead-lettered); this copy is dropped rather than left to fight over the claim.
                report.duplicates.append(delivery)
                self._notify("duplicate", delivery, None)
                continue
            in_batch.add(key)
            claim = self.store.claim(key, self.lease_seconds)
            if claim.state is ClaimState.DONE:
                report.duplicates.append(delivery)
                self._notify("duplicate", delivery, None)
            elif claim.state is ClaimState.BUSY:
                # Come back when the other worker's lease ends: if it crashed, this attempt recovers.
                busy = RetryableError("in_progress", "another worker is delivering this message",
                                      retry_after=claim.retry_after)
                self._fail(delivery, busy, report, claimed=False)
            else:
                delivery.recovering = claim.recovering
                ready.append(delivery)
        errors = self.executor.execute(ready) if ready else {}
        for delivery in ready:
            error = errors.get(delivery.record_id)
            if error is None:
                self.store.complete(delivery.message.idempotency_key)
                report.delivered.append(delivery)
                self._notify("delivered", delivery, None)
            else:
                self._fail(delivery, error, report, claimed=True)
        return report

    def _prepare(self, delivery: Delivery) -> DestinationError | None:
        """Read the envelope, find the subscription, build and validate the action payload."""
        try:
            delivery.message = QueueMessage.from_json(delivery.body)
        except EnvelopeError as exc:
            return PermanentError("invalid_message", str(exc))
        if delivery.message.action != self.action:
            return PermanentError("wrong_queue", f"a {delivery.message.action} message on the {self.action} queue")
        subscription = self.subscriptions.get(delivery.message.subscription)
        if subscription is None or subscription.action.slug != self.action:
            return PermanentError("unknown_subscription",
                                  f"no {self.action} subscription named {delivery.message.subscription!r} "
                                  "in the subscriptions file")
        delivery.subscription = subscription
        try:
            delivery.payload = subscription.action.build_payload(subscription.mapping, delivery.message.event)
        except DestinationError as exc:
            return exc
        return None

    def _fail(self, delivery: Delivery, error: DestinationError, report: Report, *, claimed: bool) -> None:
        if claimed:
            # A transient failure may have reached Qualtrics (timeout, 5xx): keep the key so the next
            # attempt checks before acting. A permanent one means Qualtrics refused it: forget the key.
            self.store.release(delivery.message.idempotency_key, uncertain=error.retryable)
        if error.retryable and delivery.attempt < self.retry.max_attempts:
            seconds = self.retry.delay(delivery.attempt, error)
            try:
                self.visibility.delay(delivery.receipt_handle, seconds)
            except Exception:  # noqa: BLE001 - the message is retried anyway, at the queue's own timeout
                pass
            report.retried.append((delivery, error, seconds))
            self._notify("retried", delivery, error)
            return
        if error.retryable:
            error = type(error)(error.code, f"{error.message} (gave up after {delivery.attempt} attempts)",
                                status=error.status, request_id=error.request_id)
        try:
            self.dead_letters.send(delivery.body, dead_letter_attributes(delivery, error))
        except Exception:  # noqa: BLE001 - never lose it: let SQS redeliver, RedrivePolicy is the net
            report.failed.append(delivery)
            self._notify("dead_letter_failed", delivery, error)
            return
        report.dead_lettered.append((delivery, error))
        self._notify("dead_lettered", delivery, error)

    def _notify(self, outcome: str, delivery: Delivery, error: DestinationError | None) -> None:
        if self.on_outcome:
            self.on_outcome(outcome, delivery, error)


def dead_letter_attributes(delivery: Delivery, error: DestinationError) -> dict[str, dict[str, str]]:
    """The reason, as SQS message attributes (readable in the console and by the DLQ tool)."""
    attributes = {
        "errorCode": error.code,
        "errorMessage": error.message[:1000],
        "errorRetryable": "true" if error.retryable else "false",
        "attempts": str(delivery.attempt),
    }
    if error.status is not None:
        attributes["httpStatus"] = str(error.status)
    if error.request_id:
        attributes["qualtricsRequestId"] = error.request_id
    if delivery.message is not None:
        attributes.update(action=delivery.message.action, subscription=delivery.message.subscription,
                          segmentMessageId=delivery.message.message_id,
                          eventType=str(delivery.message.event.get("type", "")))
    return {k: {"DataType": "String", "StringValue": v} for k, v in attributes.items() if v}

