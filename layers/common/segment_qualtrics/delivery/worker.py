"""The worker core: deliver one SQS batch of queue messages to Qualtrics, with the error model.

Every message ends in exactly one outcome (docs/error-model.md):
- delivered (or a duplicate of a delivered one): deleted by Lambda as a batch success;
- dead-lettered: a permanent error, or a transient one on the last allowed attempt; sent to the DLQ
  with its reason in message attributes, then reported as a success so Lambda deletes it;
- retried: a transient error; its visibility is set to the backoff delay and it is reported failed;
- deferred: not started, because no Qualtrics call could finish before the invocation's timeout; it is
  handed back at once (visibility 0) as a batch item failure, neither retried with backoff nor dead-lettered;
- rate-limited: not started, because the brand's rate limit had no call left for it in time (RateLimited,
  delivery/rate_limit.py); handed back with the delay the bucket predicts, or on a later receive re-enqueued
  as a fresh copy with DelaySeconds, so that however long an overload lasts it never reaches the DLQ.

Anything a record can raise (an unexpected exception, a RecursionError, a DynamoDB validation error, a bug
in an executor) ends as that record's outcome (``internal_error``), never as the invocation's error.
Each message is marked done as soon as its own call succeeds, so a crash or timeout part-way through a
batch re-runs only what had not yet landed (docs/error-model.md).

The core takes its adapters (Qualtrics client, idempotency store, dead-letter queue, visibility) as
parameters, so tests wire real adapters against local servers or small fakes.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from segment_qualtrics.delivery.idempotency import ClaimState, IdempotencyStore
from segment_qualtrics.delivery.outcomes import Outcome
from segment_qualtrics.delivery.rate_limit import RateLimited
from segment_qualtrics.destination.envelope import EnvelopeError, QueueMessage, sqs_attribute_text
from segment_qualtrics.destination.errors import DestinationError, PermanentError, RetryableError
from segment_qualtrics.destination.subscriptions import Subscription

MAX_VISIBILITY_SECONDS = 12 * 3600 - 1
MAX_DELAY_SECONDS = 900   # SQS DelaySeconds


@dataclass
class QueuedWork:
    """One SQS record on its way through the worker, until its Outcome (not itself a delivery: it may end
    dead-lettered, retried or handed back)."""

    sqs_message_id: str         # SQS messageId: the batchItemFailures identifier
    receipt_handle: str
    body: str
    attempt: int                # ApproximateReceiveCount: every receive, whether it attempted anything or not
    attributes: dict[str, Any] = field(default_factory=dict)
    message: QueueMessage | None = None   # None until parsed; executors only see parsed ones (``queued``)
    subscription: Subscription | None = None
    payload: Any = None
    recovering: bool = False    # an earlier attempt may already have reached Qualtrics
    checked_absent: bool = False   # recovering, and a lookup proved the earlier attempt did not land
    sent: bool = False          # this attempt's call for it has started: it may have landed
    claims: int = 0             # attempts on its key, this one included, as the idempotency store counts them
    detail: dict[str, Any] = field(default_factory=dict)   # what the executor adds to its outcome's log line

    @property
    def attempts(self) -> int:
        """The attempt number retries and dead letters go by: the store's count once claimed, else receives."""
        return self.claims or self.attempt

    @classmethod
    def from_sqs_record(cls, record: dict[str, Any]) -> QueuedWork:
        attrs = record.get("attributes") or {}
        try:
            attempt = max(int(attrs.get("ApproximateReceiveCount", "1") or 1), 1)
        except (TypeError, ValueError):
            attempt = 1
        return cls(
            sqs_message_id=record["messageId"],
            receipt_handle=record.get("receiptHandle", ""),
            body=record.get("body", ""),
            attempt=attempt,
            attributes=record.get("messageAttributes") or {},
        )

    @property
    def queued(self) -> QueueMessage:
        """The parsed message: set before the delivery is claimed or handed to an executor."""
        if self.message is None:
            raise RuntimeError(f"record {self.sqs_message_id} was not parsed")
        return self.message


class DeadLetterQueue(Protocol):
    def send(self, body: str, attributes: dict[str, dict[str, str]]) -> None: ...


class VisibilityControl(Protocol):
    def delay(self, receipt_handle: str, seconds: int) -> None: ...


class Requeue(Protocol):
    """Sends a fresh copy of a message to its own queue (receive count 0), visible after ``delay_seconds``."""

    def send(self, body: str, attributes: dict[str, dict[str, str]], delay_seconds: int) -> None: ...


class Progress:
    """An executor's window on the worker while it runs a batch.

    ``delivered`` is called as soon as a delivery's own call succeeded (the worker marks it done at once);
    ``can_call`` says whether one more Qualtrics call can finish before the invocation's timeout.
    """

    def __init__(self, on_delivered: Callable[[QueuedWork], None] | None = None,
                 remaining_seconds: Callable[[], float] | None = None, call_seconds: float = 0.0) -> None:
        self._on_delivered = on_delivered
        self._remaining = remaining_seconds
        self.call_seconds = call_seconds
        self.delivered_ids: set[str] = set()
        self._asked = False
        self._lock = threading.Lock()   # an executor may report from several threads

    def delivered(self, delivery: QueuedWork) -> None:
        with self._lock:
            if delivery.sqs_message_id in self.delivered_ids:
                return
            self.delivered_ids.add(delivery.sqs_message_id)
        if self._on_delivered:
            self._on_delivered(delivery)

    def can_call(self) -> bool:
        # The first call always starts: however long the claims took, an invocation makes progress rather
        # than deferring its whole batch forever (the template's timeout leaves room for that call).
        with self._lock:
            if self._remaining is None or not self._asked or self._remaining() >= self.call_seconds:
                self._asked = True
                return True
            return False


class Executor(Protocol):
    """An action's Qualtrics work for a batch.

    Reports each delivered message to ``progress`` as its call succeeds and returns an error per failed
    one. A delivery neither reported nor failed was not started (no time left): the worker defers it.
    """

    def execute(self, deliveries: Sequence[QueuedWork], progress: Progress | None = None
                ) -> dict[str, DestinationError]: ...


# Unexpected exceptions that say nothing about the message: a retry may well succeed. Matched by name so
# the core needs no boto3: the builtins and botocore's connection and timeout errors (its ConnectionError,
# HTTPClientError and their subclasses), and the throttling/server codes of botocore's ClientError.
TRANSIENT_EXCEPTION_NAMES = frozenset({"ConnectionError", "TimeoutError", "HTTPClientError"})
TRANSIENT_AWS_CODES = frozenset({
    "ThrottlingException", "Throttling", "ProvisionedThroughputExceededException", "RequestLimitExceeded",
    "InternalServerError", "InternalFailure", "ServiceUnavailable", "TransactionConflictException",
    "RequestTimeout", "RequestTimeoutException",
})


def internal_error(exc: BaseException) -> DestinationError:
    """An exception that is not a classified DestinationError, as one record's outcome: ``internal_error``.

    Transient (retried) when it names a throttled or unreachable service; otherwise permanent (dead-lettered
    at once): a validation error, a RecursionError, a TypeError... will fail the same way next time.
    """
    if isinstance(exc, DestinationError):
        return exc
    response = getattr(exc, "response", None)
    aws_code = (response.get("Error") or {}).get("Code") if isinstance(response, dict) else None
    names = {cls.__name__ for cls in type(exc).__mro__}
    transient = aws_code in TRANSIENT_AWS_CODES or bool(names & TRANSIENT_EXCEPTION_NAMES)
    kind = type(exc).__name__ + (f" ({aws_code})" if aws_code else "")
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - even its text may be broken
        text = ""
    cls = RetryableError if transient else PermanentError
    return cls("internal_error", f"{kind}: {text[:500]}" if text else kind)


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

    delivered: list[QueuedWork] = field(default_factory=list)
    duplicates: list[QueuedWork] = field(default_factory=list)
    retried: list[tuple[QueuedWork, DestinationError, int]] = field(default_factory=list)
    dead_lettered: list[tuple[QueuedWork, DestinationError]] = field(default_factory=list)
    failed: list[QueuedWork] = field(default_factory=list)   # left for SQS to redeliver (e.g. DLQ send failed)
    deferred: list[QueuedWork] = field(default_factory=list)  # not started: no time left in the invocation
    # not started: the rate limit had no call left in time; handed back with a delay (seconds), or re-enqueued
    handed_back: list[tuple[QueuedWork, int]] = field(default_factory=list)
    requeued: list[tuple[QueuedWork, int]] = field(default_factory=list)   # a fresh copy sent: this one is deleted

    @property
    def failure_ids(self) -> list[str]:
        return ([d.sqs_message_id for d, _, _ in self.retried] + [d.sqs_message_id for d in self.failed]
                + [d.sqs_message_id for d in self.deferred] + [d.sqs_message_id for d, _ in self.handed_back])


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
    on_outcome: Callable[[Outcome, QueuedWork, DestinationError | None], None] | None = None
    # Seconds left in the invocation (None: no limit), and what one Qualtrics call needs at worst plus the
    # time to record outcomes after it: no call starts with less left than that.
    remaining_seconds: Callable[[], float] | None = None
    call_seconds: float = 0.0
    # The queue's RedrivePolicy maxReceiveCount: on that receive, SQS moves a message handed back to the DLQ
    # without a reason, so the worker dead-letters it itself (None: unknown).
    max_receives: int | None = None
    # Seconds the invocation had when it started (worker_app sets it at the start of each invocation): whether
    # the function's timeout leaves room for one call at all. None: read from remaining_seconds as a batch starts.
    invocation_seconds: float | None = None
    # Where a rate-limited message goes as a fresh copy from its second receive on (None: always handed back).
    requeue: Requeue | None = None
    jitter: Callable[[], float] = random.random

    def process(self, deliveries: Sequence[QueuedWork]) -> Report:
        report = Report()
        whole = self.invocation_seconds
        if whole is None and self.remaining_seconds is not None:
            whole = self.remaining_seconds()
        ready: list[QueuedWork] = []
        in_batch: set[str] = set()
        for delivery in deliveries:
            try:
                self._admit(delivery, ready, in_batch, report)
            except Exception as exc:  # noqa: BLE001 - one record's failure is that record's outcome
                self._fail(delivery, internal_error(exc), report, claimed=False)
        if ready:
            self._execute(ready, report, self._budget(whole))
        return report

    def _budget(self, whole: float | None) -> Callable[[], float] | None:
        """The clock no call may outrun; None when the function's whole timeout leaves no room for one call
        (a function configured that short runs as if unbounded: Lambda's own timeout is then the limit).

        Judged on the time the invocation started with, not on what the claims left: with little time left
        the rule must apply (only the first call starts), not switch off."""
        if self.remaining_seconds is None or whole is None or whole < self.call_seconds:
            return None
        return self.remaining_seconds

    def _admit(self, delivery: QueuedWork, ready: list[QueuedWork], in_batch: set[str], report: Report) -> None:
        """Prepare and claim one delivery: it joins ``ready``, or its outcome is settled here."""
        error = self._prepare(delivery)
        if error is not None:
            self._fail(delivery, error, report, claimed=False)
            return
        key = delivery.queued.idempotency_key
        if key in in_batch:
            # The same event twice in one batch: the first copy carries it (delivered, retried or
            # dead-lettered); this copy is dropped rather than left to fight over the claim.
            report.duplicates.append(delivery)
            self._notify(Outcome.DUPLICATE, delivery, None)
            return
        in_batch.add(key)
        claim = self.store.claim(key, self.lease_seconds)
        if claim.state is ClaimState.DONE:
            report.duplicates.append(delivery)
            self._notify(Outcome.DUPLICATE, delivery, None)
        elif claim.state is ClaimState.BUSY:
            # Come back when the other worker's lease ends: if it crashed, this attempt recovers.
            busy = RetryableError("in_progress", "another worker is delivering this message",
                                  retry_after=claim.retry_after)
            self._fail(delivery, busy, report, claimed=False, waited=True)
        else:
            delivery.recovering = claim.recovering
            delivery.claims = claim.attempts
            ready.append(delivery)

    def _execute(self, ready: list[QueuedWork], report: Report, budget: Callable[[], float] | None) -> None:
        progress = Progress(lambda d: self._complete(d, report), budget, self.call_seconds)
        crash: DestinationError | None = None
        try:
            errors = self.executor.execute(ready, progress) or {}
        except Exception as exc:  # noqa: BLE001 - a bug in the executor fails the records it had not settled
            errors, crash = {}, internal_error(exc)
        for delivery in ready:
            if delivery.sqs_message_id in progress.delivered_ids:
                continue
            error = errors.get(delivery.sqs_message_id)
            if error is None and crash is not None:
                delivery.sent = True   # how far it got is unknown: its call may have landed
                error = crash
            try:
                if error is not None:
                    self._fail(delivery, error, report, claimed=True)
                else:
                    self._defer(delivery, report)
            except Exception as exc:  # noqa: BLE001 - as in process()
                self._fail(delivery, internal_error(exc), report, claimed=False)

    def _complete(self, delivery: QueuedWork, report: Report) -> None:
        """Its call succeeded: mark it done now, so a crash later in the batch does not run it again."""
        try:
            self.store.complete(delivery.queued.idempotency_key)
        except Exception as exc:  # noqa: BLE001 - delivered all the same; the record's lease runs out
            self._notify(Outcome.COMPLETE_FAILED, delivery, internal_error(exc))
        report.delivered.append(delivery)
        self._notify(Outcome.DELIVERED, delivery, None)

    def _defer(self, delivery: QueuedWork, report: Report) -> None:
        """Not started for lack of time: hand it back at once, without a backoff and without a dead letter."""
        if self.max_receives is not None and delivery.attempt >= self.max_receives:
            # Handed back now, SQS would dead-letter it on its next receive with no reason attached.
            error = RetryableError("out_of_time", "no time left in the invocation on the last receive the "
                                                  "queue allows")
            self._fail(delivery, error, report, claimed=True)
            return
        self._release(delivery, uncertain=delivery.recovering)
        try:
            self.visibility.delay(delivery.receipt_handle, 0)
        except Exception:  # noqa: BLE001 - it comes back at the queue's visibility timeout instead
            pass
        report.deferred.append(delivery)
        self._notify(Outcome.DEFERRED, delivery, None)

    def _hand_back(self, delivery: QueuedWork, error: RateLimited, report: Report, *, claimed: bool) -> None:
        """Rate-limited: its call did not start. Back to the queue for when the bucket predicts a call is free;
        never an attempt, never a dead letter.

        Each receive counts toward the queue's maxReceiveCount, and on the last one SQS would dead-letter it
        without a reason. So only the first receive of a copy is handed back (visibility delay); from the
        second on, a fresh copy (receive count 0) is sent with DelaySeconds and this one is deleted. A copy
        thus spends at most one receive on the rate limit between two real attempts."""
        if claimed:
            # Nothing of this attempt landed; an earlier one may have, unless a lookup proved otherwise.
            self._release(delivery, uncertain=delivery.recovering and not delivery.checked_absent)
        wait = (error.retry_after or 1.0) * (1 + 0.2 * self.jitter())   # spread the ones refused together
        seconds = int(min(MAX_VISIBILITY_SECONDS, max(1, math.ceil(wait))))
        last_receive = self.max_receives is not None and delivery.attempt >= self.max_receives
        if self.requeue is not None and delivery.message is not None and (delivery.attempt >= 2 or last_receive):
            delay = min(seconds, MAX_DELAY_SECONDS)
            try:
                self.requeue.send(delivery.body, delivery.message.attributes(), delay)
            except Exception:  # noqa: BLE001 - handed back instead: SQS's redrive stays the net
                pass
            else:
                report.requeued.append((delivery, delay))
                self._notify(Outcome.REQUEUED, delivery, error)
                return
        try:
            self.visibility.delay(delivery.receipt_handle, seconds)
        except Exception:  # noqa: BLE001 - it comes back at the queue's visibility timeout instead
            pass
        report.handed_back.append((delivery, seconds))
        self._notify(Outcome.RATE_LIMITED, delivery, error)

    def _release(self, delivery: QueuedWork, *, uncertain: bool) -> None:
        try:
            self.store.release(delivery.queued.idempotency_key, uncertain=uncertain)
        except Exception:  # noqa: BLE001 - the record keeps its lease; when it runs out the next claim recovers
            pass

    def _prepare(self, delivery: QueuedWork) -> DestinationError | None:
        """Read the envelope, find the subscription, build and validate the action payload."""
        try:
            delivery.message = QueueMessage.from_json(delivery.body)
        except EnvelopeError as exc:
            return PermanentError("invalid_message", str(exc))
        except RecursionError:
            return PermanentError("invalid_message", "message body is nested too deep to read")
        if delivery.message.action != self.action:
            return PermanentError("wrong_queue", f"a {delivery.message.action} message on the {self.action} queue")
        subscription = self.subscriptions.get(delivery.message.subscription)
        if subscription is None or subscription.action.slug != self.action:
            return PermanentError("unknown_subscription",
                                  f"no {self.action} subscription named {delivery.message.subscription!r} "
                                  "in the subscriptions file")
        delivery.subscription = subscription
        if subscription.problems:   # switched off at start: kept in the DLQ until the file is fixed
            return PermanentError("subscription_invalid", f"the subscription {subscription.name!r} is switched "
                                  f"off for problems in the subscriptions file: {'; '.join(subscription.problems)}")
        try:
            delivery.payload = subscription.action.build_payload(subscription.mapping, delivery.message.event)
        except DestinationError as exc:
            return exc
        except Exception as exc:  # noqa: BLE001 - a mapping or payload bug on this event: this record's outcome
            return internal_error(exc)
        return None

    def _fail(self, delivery: QueuedWork, error: DestinationError, report: Report, *, claimed: bool,
              waited: bool = False) -> None:
        """``waited``: it only waited on a key another worker holds; that is no attempt (its receives are)."""
        if isinstance(error, RateLimited):
            self._hand_back(delivery, error, report, claimed=claimed)
            return
        if claimed:
            # Keep the key "uncertain" while this or an earlier attempt may have reached Qualtrics, so the
            # next attempt (or a redrive from the DLQ) checks before acting; forget it only when nothing landed.
            self._release(delivery, uncertain=may_have_landed(delivery, error))
        # On the last receive the queue allows, handing it back would let SQS dead-letter it without a reason.
        last_receive = self.max_receives is not None and delivery.attempt >= self.max_receives
        attempts_left = waited or delivery.attempts < self.retry.max_attempts
        if error.retryable and attempts_left and not last_receive:
            seconds = self.retry.delay(delivery.attempts, error)
            try:
                self.visibility.delay(delivery.receipt_handle, seconds)
            except Exception:  # noqa: BLE001 - the message is retried anyway, at the queue's own timeout
                pass
            report.retried.append((delivery, error, seconds))
            self._notify(Outcome.RETRIED, delivery, error)
            return
        if waited:
            error = type(error)(error.code, f"{error.message}: waited on that worker until the last receive the "
                                            f"queue allows ({delivery.attempt} receives)")
        elif error.retryable:
            error = type(error)(error.code, f"{error.message} (gave up after {delivery.attempts} attempts, "
                                            f"{delivery.attempt} receives)",
                                status=error.status, request_id=error.request_id)
        try:
            self.dead_letters.send(delivery.body, dead_letter_attributes(delivery, error))
        except Exception:  # noqa: BLE001 - never lose it: let SQS redeliver, RedrivePolicy is the net
            report.failed.append(delivery)
            self._notify(Outcome.DEAD_LETTER_FAILED, delivery, error)
            return
        report.dead_lettered.append((delivery, error))
        self._notify(Outcome.DEAD_LETTERED, delivery, error)

    def _notify(self, outcome: Outcome, delivery: QueuedWork, error: DestinationError | None) -> None:
        if self.on_outcome:
            try:
                self.on_outcome(outcome, delivery, error)
            except Exception:  # noqa: BLE001 - logging a record never changes its outcome
                pass


def may_have_landed(delivery: QueuedWork, error: DestinationError) -> bool:
    """After a failure: could this message's action have happened in Qualtrics all the same?"""
    if error.retryable:
        return True          # a timeout or a 5xx: Qualtrics may have acted before the answer was lost
    if delivery.recovering and not delivery.checked_absent:
        return True          # an earlier attempt may have landed, and nothing proved it did not
    # Sent, then an unexpected exception (e.g. reading the answer): unknown. A Qualtrics refusal is not.
    return delivery.sent and error.code == "internal_error"


def dead_letter_attributes(delivery: QueuedWork, error: DestinationError) -> dict[str, dict[str, str]]:
    """The reason, as SQS message attributes (readable in the console and by the DLQ tool)."""
    attributes = {
        "errorCode": error.code,
        "errorMessage": error.message[:1000],
        "errorRetryable": "true" if error.retryable else "false",
        "attempts": str(delivery.attempts),
        "receives": str(delivery.attempt),
    }
    if error.status is not None:
        attributes["httpStatus"] = str(error.status)
    if error.request_id:
        attributes["qualtricsRequestId"] = error.request_id
    if delivery.message is not None:
        attributes.update(action=delivery.message.action, subscription=delivery.message.subscription,
                          segmentMessageId=delivery.message.message_id,
                          eventType=str(delivery.message.event.get("type", "")))
    # Values come from the message and the error text: SQS refuses a whole send for one character it does not
    # take, and a refused dead letter would be left to SQS's reason-less redrive. The body keeps exact values.
    # str(): a value of another type (a hand-made message read by an older check) still leaves with its reason.
    return {k: {"DataType": "String", "StringValue": sqs_attribute_text(str(v)[:MAX_ATTRIBUTE_CHARS])}
            for k, v in attributes.items() if v not in (None, "")}


MAX_ATTRIBUTE_CHARS = 1024   # per dead-letter attribute: the reason stays readable, the message under 1 MiB

