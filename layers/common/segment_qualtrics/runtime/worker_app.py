"""Wiring of a worker function: settings, subscriptions, Qualtrics client and AWS adapters, built once.

Observability of a worker (observability.py): one invocation is one action, so ``action`` is added once
per invocation as a dimension of every metric and a key of every log line; each outcome line also
carries the Segment messageId (as correlation id) and the subscription.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import boto3
import requests
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError, TransformParameterError
from botocore.config import Config
from requests.adapters import HTTPAdapter

from segment_qualtrics.adapters.aws import DynamoIdempotencyStore, SqsDeadLetterQueue, SqsRequeue, SqsVisibility
from segment_qualtrics.adapters.dynamodb_rate_limit import DynamoRateLimitStore
from segment_qualtrics.adapters.health import check_whoami
from segment_qualtrics.adapters.qualtrics import CONNECT_TIMEOUT, READ_TIMEOUT, QualtricsClient, QualtricsCredentials
from segment_qualtrics.delivery.outcomes import Outcome
from segment_qualtrics.delivery.rate_limit import RateLimiter
from segment_qualtrics.delivery.transactions import ContactCache, TransactionExecutor
from segment_qualtrics.delivery.worker import QueuedWork, RetryPolicy, Worker
from segment_qualtrics.destination.actions import ACTIONS
from segment_qualtrics.destination.errors import DestinationError, PermanentError, RetryableError
from segment_qualtrics.runtime.observability import (
    Metric,
    MetricBatch,
    add,
    logger,
    mask,
    metrics,
    redact,
    retry_reason,
    set_process_keys,
    tracer,
)
from segment_qualtrics.runtime.settings import WorkerSettings
from segment_qualtrics.runtime.startup import subscriptions_at_start

if TYPE_CHECKING:   # a TypedDict Powertools declares for type checkers only
    from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse

# No Qualtrics call starts unless this much of the invocation is left: the client's connect and read
# timeouts (its worst case) plus the time to mark outcomes, dead-letter and hand back the rest.
FINISH_MARGIN_SECONDS = 3.0
CALL_SECONDS = CONNECT_TIMEOUT + READ_TIMEOUT + FINISH_MARGIN_SECONDS


# Reading the Qualtrics secret: an unreachable Secrets Manager fails in seconds (botocore's defaults wait a
# minute per try), so the batch's messages are retried rather than the invocation timing out.
SECRETS_CONFIG = Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 2, "mode": "standard"})
SECRET_FAILURE_SECONDS = 10.0   # how long one failed read of the secret answers for the next ones


def secret_credentials(provider: SecretsProvider, secret_arn: str) -> Callable[[bool], QualtricsCredentials]:
    """The Qualtrics client's credentials provider, read from the secret (Powertools caches it a few seconds).

    A secret that cannot be read (Secrets Manager unreachable or throttled, the secret missing or denied) is
    ``qualtrics_secret_unavailable``, retried: nothing about the message is wrong, and a retry after the outage
    or the fix succeeds. A secret that is read but unusable (not a JSON object, no apiToken) is
    ``qualtrics_not_configured``, permanent.
    """

    failed: list[tuple[float, RetryableError]] = []   # the last read failure, kept a few seconds

    def credentials(force: bool) -> QualtricsCredentials:
        if failed and time.monotonic() < failed[0][0]:
            # One failed read answers for the rest of the batch: no message waits out the same timeouts again.
            raise failed[0][1]
        try:
            value = provider.get(secret_arn, transform="json", force_fetch=force)
        except TransformParameterError:
            raise PermanentError("qualtrics_not_configured", "the Qualtrics secret is not JSON") from None
        except GetParameterError as exc:
            cause = exc.__context__ or exc   # Powertools raises it inside its except: the botocore error
            error = RetryableError("qualtrics_secret_unavailable",
                                   f"cannot read the Qualtrics secret: {type(cause).__name__}: {str(cause)[:300]}")
            failed[:] = [(time.monotonic() + SECRET_FAILURE_SECONDS, error)]
            raise error from None
        failed.clear()
        if not isinstance(value, dict):
            raise PermanentError("qualtrics_not_configured", "the Qualtrics secret is not a JSON object")
        found = QualtricsCredentials.from_secret(value)
        redact(found.api_token)
        return found

    return credentials


def partial_batch_response(records: list[dict[str, Any]], failures: set[str]) -> PartialItemFailureResponse:
    """SQS's partial batch response: the records to receive again, in their order (the rest are deleted).

    Written here rather than with Powertools' batch utility: every outcome is already known, and that utility
    imports its event classes, pydantic models and asyncio into every cold start (about a third of the
    worker's INIT above boto3's).
    """
    return {"batchItemFailures": [{"itemIdentifier": rid} for record in records if isinstance(record, dict)
                                  and isinstance(rid := record.get("messageId"), str) and rid in failures]}


# Each outcome's own per-action count. DEFERRED (no time left to start its call) and COMPLETE_FAILED (delivered,
# but the idempotency record could not be marked done) are logged as warnings and count nowhere else; a
# rate-limited hand-back (RATE_LIMITED, REQUEUED) counts in RateLimitHandBacks.
OUTCOME_METRICS: dict[Outcome, Metric] = {
    Outcome.DELIVERED: Metric.MESSAGES_DELIVERED,
    Outcome.DUPLICATE: Metric.DUPLICATES_SKIPPED,
    Outcome.RETRIED: Metric.MESSAGES_RETRIED,
    Outcome.DEAD_LETTERED: Metric.MESSAGES_DEAD_LETTERED,
    Outcome.DEAD_LETTER_FAILED: Metric.DEAD_LETTER_SEND_FAILED,
}


class WorkerObserver:
    """Logs and metrics of one worker's invocations: the Worker's ``on_outcome`` and the client's ``on_call``."""

    def __init__(self, action: str, batch: MetricBatch | None = None) -> None:
        self.action = action
        self.batch = batch or MetricBatch()
        self._calls = 0
        self.contact_cache: ContactCache | None = None   # the executor's, when it has one (transactions)
        self._cache_seen: tuple[int, int] | None = None
        self._lock = threading.Lock()   # a batch's calls run in several threads

    def begin(self) -> None:
        metrics.add_dimension(name="action", value=self.action)   # cleared by each flush: once per invocation
        tracer.put_annotation("action", self.action)
        self._calls = 0

    def end(self, records: int) -> None:
        add(Metric.BATCH_SIZE, records)
        add(Metric.QUALTRICS_CALLS, self._calls)
        cache = self.contact_cache
        if cache is not None:
            # The contact cache lives across warm invocations: report what this batch added to its counters.
            hits, misses = cache.hits, cache.misses
            before_hits, before_misses = self._cache_seen or (0, 0)
            self._cache_seen = (hits, misses)
            add(Metric.CONTACT_LOOKUPS, (hits - before_hits) + (misses - before_misses))
            add(Metric.CONTACT_CACHE_HITS, hits - before_hits)
        self.batch.flush()

    def outcome(self, outcome: Outcome, delivery: QueuedWork, error: DestinationError | None) -> None:
        message = delivery.message
        extra: dict[str, Any] = {"outcome": outcome.value, "attempt": delivery.attempt,
                                 "sqsMessageId": delivery.sqs_message_id, "action": self.action}
        if message is not None:
            extra.update(correlation_id=message.message_id, segmentMessageId=message.message_id,
                         subscription=message.subscription, eventType=message.event.get("type"),
                         eventName=message.event.get("event"))
        if error is not None:
            extra.update(errorCode=error.code, errorMessage=mask(error.message), httpStatus=error.status,
                         qualtricsRequestId=error.request_id, retryable=error.retryable)
        for key, value in delivery.detail.items():   # the executor's own account (deleteContact's result)
            extra.setdefault(key, value)
        level = logger.info if outcome.is_routine else logger.warning
        level(outcome.label, extra={k: v for k, v in extra.items() if v is not None})

        deleted = delivery.detail.get("contactsDeleted")
        if isinstance(deleted, int) and deleted > 0:   # also when a later call failed: those are gone all the same
            add(Metric.CONTACTS_DELETED, deleted)
        if (metric := OUTCOME_METRICS.get(outcome)) is not None:
            add(metric)
        if outcome is Outcome.RETRIED:
            reason = retry_reason(error.code, error.status) if error else "other"
            self.batch.add(Metric.RETRIES_BY_REASON, action=self.action, reason=reason)
        elif outcome is Outcome.DEAD_LETTERED:
            self.batch.add(Metric.DEAD_LETTERS_BY_CODE, action=self.action,
                           errorCode=error.code if error else "unknown")
        elif outcome in (Outcome.RATE_LIMITED, Outcome.REQUEUED):
            with self._lock:
                self.batch.add(Metric.RATE_LIMIT_HAND_BACKS, action=self.action)

    def call(self, operation: str, status: int | None, seconds: float) -> None:
        self._calls += 1
        with self._lock:
            self.batch.add(Metric.QUALTRICS_LATENCY, round(seconds * 1000, 1), action=self.action,
                           operation=operation)
            if status is None or not 200 <= status < 300:
                self.batch.add(Metric.QUALTRICS_ERRORS, action=self.action,
                               status=str(status) if status is not None else "no_response")

    def rate_limit_wait(self, operation: str, seconds: float) -> None:
        """A call waited for the rate limit (and then went, or its message was handed back)."""
        with self._lock:
            self.batch.add(Metric.RATE_LIMIT_WAITS, action=self.action)
            self.batch.add(Metric.RATE_LIMIT_WAIT_TIME, round(seconds * 1000, 1), action=self.action)

    def rate_limit_error(self, exc: Exception) -> None:
        logger.warning("rate limit store failed; the call went ahead",
                       extra={"reason": f"{type(exc).__name__}: {str(exc)[:300]}"})


class WorkerApp:
    def __init__(self, settings: WorkerSettings, worker: Worker, observer: WorkerObserver | None = None,
                 startup_check: Callable[[], None] | None = None, limiter: RateLimiter | None = None) -> None:
        self.settings = settings
        self.worker = worker
        self.limiter = limiter
        self.observer = observer or WorkerObserver(settings.ACTION_SLUG)
        self._startup_check = startup_check   # runs once, on the first invocation (keeps INIT small)

    @classmethod
    def from_environment(cls) -> WorkerApp:
        settings = WorkerSettings.from_environ()
        action = ACTIONS.get(settings.ACTION_SLUG)
        if action is None:
            raise RuntimeError(f"ACTION_SLUG {settings.ACTION_SLUG!r} is not one of {', '.join(ACTIONS)}")
        subscriptions = {s.name: s for s in subscriptions_at_start(settings.ACTION_SLUG)
                         if s.action.slug == settings.ACTION_SLUG}   # switched-off ones too: dead-lettered
        observer = WorkerObserver(settings.ACTION_SLUG)
        set_process_keys(action=settings.ACTION_SLUG)   # on every line, the raw event's included

        # A client of the default session: Powertools' own (a new session) would load botocore's data again.
        secrets = SecretsProvider(boto3_client=boto3.client("secretsmanager", config=SECRETS_CONFIG))
        credentials = secret_credentials(secrets, settings.QUALTRICS_SECRET_ARN)
        dynamodb = boto3.client("dynamodb")
        limiter = None
        if settings.rate_limits():
            limiter = RateLimiter(DynamoRateLimitStore(dynamodb, settings.IDEMPOTENCY_TABLE), settings.rate_limits(),
                                  settings.RATE_LIMIT_WINDOW_SECONDS)
            limiter.reserve = CALL_SECONDS   # a token is worth taking only if its call can still finish
            limiter.on_wait, limiter.on_error = observer.rate_limit_wait, observer.rate_limit_error
        # One pooled session for the batch's concurrent calls: a connection per thread, kept across invocations.
        session = requests.Session()
        pool = HTTPAdapter(pool_maxsize=max(10, settings.QUALTRICS_BATCH_CONCURRENCY))
        session.mount("https://", pool)
        session.mount("http://", pool)
        client = QualtricsClient(credentials, settings.QUALTRICS_BASE_URL, session=session, on_call=observer.call,
                                 limiter=limiter)
        sqs = boto3.client("sqs")
        executor = action.executor_class()(client)
        if hasattr(executor, "concurrency"):
            executor.concurrency = settings.QUALTRICS_BATCH_CONCURRENCY
        if hasattr(executor, "legacy_marker_trusted"):
            # An old-style marker (segmentMessageId only) is proof only if no other subscription wrote it.
            executor.legacy_marker_trusted = len(subscriptions) == 1
        if isinstance(executor, TransactionExecutor):
            observer.contact_cache = executor.cache
        worker = Worker(
            action=settings.ACTION_SLUG,
            subscriptions=subscriptions,
            executor=executor,
            store=DynamoIdempotencyStore(dynamodb, settings.IDEMPOTENCY_TABLE,
                                         keep_seconds=settings.idempotency_keep_seconds()),
            dead_letters=SqsDeadLetterQueue(sqs, settings.DEAD_LETTER_QUEUE_URL),
            visibility=SqsVisibility(sqs, settings.QUEUE_URL),
            retry=RetryPolicy(max_attempts=settings.max_attempts(), base_seconds=settings.RETRY_BASE_SECONDS),
            on_outcome=observer.outcome,
            call_seconds=CALL_SECONDS,
            max_receives=settings.MAX_RECEIVE_COUNT,
            requeue=SqsRequeue(sqs, settings.QUEUE_URL),
        )
        check = None
        if startup_check_wanted(os.environ, settings.QUALTRICS_BASE_URL):
            check = lambda: qualtrics_startup_check(credentials, client, settings.QUALTRICS_BASE_URL)  # noqa: E731
        return cls(settings, worker, observer, check, limiter)

    @tracer.capture_method(capture_response=False)
    def handle(self, event: dict[str, Any], context: Any) -> PartialItemFailureResponse:
        records = event.get("Records") or []
        remaining = _remaining_seconds(context)
        started_with = remaining() if remaining is not None else None   # before the startup check and the claims
        self.observer.begin()
        try:
            self._run_startup_check()
            self.worker.lease_seconds = _lease_seconds(context)
            self.worker.remaining_seconds = remaining
            self.worker.invocation_seconds = started_with
            if self.limiter is not None:
                self.limiter.remaining = remaining
            report = self.worker.process([QueuedWork.from_sqs_record(r) for r in records])
        finally:
            self.observer.end(len(records))
        return partial_batch_response(records, set(report.failure_ids))

    def _run_startup_check(self) -> None:
        check, self._startup_check = self._startup_check, None
        if check is None:
            return
        try:
            check()
        except Exception as exc:  # noqa: BLE001 - a check never fails an invocation
            logger.warning("Qualtrics startup check failed to run", extra={"reason": f"{type(exc).__name__}: {exc}"})


def startup_check_wanted(environ: Any, base_url: str | None) -> bool:
    """QUALTRICS_STARTUP_CHECK: false = never; true = always; unset/auto = unless QUALTRICS_BASE_URL is set.

    With a base URL override (a sandbox or a proxy) the datacenter check means nothing, and a sandbox's
    request log stays exactly the delivery calls.
    """
    value = str(environ.get("QUALTRICS_STARTUP_CHECK", "auto")).strip().lower()
    if value in ("false", "0", "no", "off"):
        return False
    if value in ("true", "1", "yes", "on"):
        return True
    return not base_url


def qualtrics_startup_check(credentials: Callable[[bool], QualtricsCredentials], client: QualtricsClient,
                            base_url_override: str | None) -> None:
    """GET /API/v3/whoami with the worker's credentials; one log line, a warning when something is off."""
    try:
        found = credentials(False)
    except DestinationError as exc:
        logger.warning("Qualtrics startup check: no usable credentials",
                       extra={"check": "whoami", "errorCode": exc.code, "reason": exc.message})
        return
    # Through the worker's own client: the same URL rule and no redirects as every delivery call.
    report = check_whoami(client, expected_datacenter=None if base_url_override else found.datacenter)
    fields = {"check": "whoami", **report.log_fields()}
    if report.ok:
        logger.info("Qualtrics startup check passed", extra=fields)
    else:
        logger.warning("Qualtrics startup check: " + "; ".join(report.problems), extra=fields)


def _remaining_seconds(context: Any) -> Callable[[], float] | None:
    """Seconds left in this invocation, from the Lambda context (None without one: no limit)."""
    clock = getattr(context, "get_remaining_time_in_millis", None)
    if not callable(clock):
        return None
    return lambda: clock() / 1000


def _lease_seconds(context: Any) -> int:
    # Hold the claim for as long as this invocation can still run, plus a margin.
    try:
        return int(context.get_remaining_time_in_millis() / 1000) + 10
    except Exception:  # noqa: BLE001 - no context (direct calls): the worker timeout's order of size
        return 60
