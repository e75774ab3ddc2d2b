"""Wiring of the ingest function: settings, subscriptions, secret and SQS adapters, built once.

Observability (observability.py): the request's lines carry the API Gateway request id as correlation id;
each event's lines (queued, rejected) carry the Segment messageId instead, with the action and the
subscription. Metrics: events received / accepted / rejected (by reason), requests rejected (by code),
messages queued (by action).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import boto3
from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError, TransformParameterError

from segment_qualtrics.adapters.aws import SqsPublisher
from segment_qualtrics.destination.subscriptions import ConfigError, Subscription
from segment_qualtrics.ingest.core import (
    IngestCredentials,
    IngestRequest,
    IngestResponse,
    Rejection,
    Router,
    authenticate,
    error_response,
    handle_ingest,
)
from segment_qualtrics.runtime.observability import Metric, MetricBatch, add, logger, redact, tracer
from segment_qualtrics.runtime.settings import IngestSettings
from segment_qualtrics.runtime.startup import log_startup_failure, subscriptions_at_start

FORCED_REFRESH_INTERVAL = 60.0   # at most one uncached secret read a minute, after a failed check


class SecretUnusable(Exception):
    """The ingest secret cannot be used: ``response`` is the answer (our JSON 5xx, never API Gateway's bare
    500), ``cause`` what the log line says. Neither holds any of the secret's value."""

    def __init__(self, response: IngestResponse, cause: str) -> None:
        super().__init__(cause)
        self.response = response
        self.cause = cause


def _not_an_object() -> SecretUnusable:
    return SecretUnusable(
        error_response(500, "auth_not_configured",
                       'the ingest secret is not a JSON object; it must be one such as {"sharedSecret": "..."}'),
        "the ingest secret's value is not a JSON object (e.g. the bare shared secret pasted in): "
        'it must be one such as {"sharedSecret": "..."}')


class IngestApp:
    def __init__(self, settings: IngestSettings, subscriptions: list[Subscription], publisher: SqsPublisher,
                 batch: MetricBatch | None = None) -> None:
        self.settings = settings
        self.router = Router(subscriptions)   # subscriptions indexed by event type, once per cold start
        self.publisher = publisher
        self.batch = batch or MetricBatch()
        self._last_forced = 0.0
        self._secrets: parameters.SecretsProvider | None = None   # made by the first request

    @classmethod
    def from_environment(cls) -> IngestApp:
        settings = IngestSettings.from_environ()
        subscriptions = subscriptions_at_start("ingest")   # invalid ones switched off, logged, counted
        publisher = SqsPublisher(boto3.client("sqs"), settings.queue_urls())
        return cls(settings, subscriptions, publisher)

    def credentials(self, force: bool = False) -> IngestCredentials:
        """The ingest secret's credentials. SecretUnusable: a value that is not a JSON object (500: the operator
        must fix it), a secret that cannot be read (503: Segment retries, and an outage passes)."""
        try:
            if self._secrets is None:
                # A client of the default session (as the SQS client's): Powertools' default provider would
                # make a new session and load botocore's data again, about 100 ms of the first request.
                self._secrets = parameters.SecretsProvider(boto3_client=boto3.client("secretsmanager"))
            value = self._secrets.get(self.settings.INGEST_SECRET_ARN, transform="json", force_fetch=force)
        except TransformParameterError:   # its text is not JSON; the exception's text is not logged (no value)
            raise _not_an_object() from None
        except GetParameterError as exc:   # throttled, unreachable, not found, no permission: botocore's words
            raise SecretUnusable(error_response(503, "secret_unavailable",
                                                "the ingest secret cannot be read right now; try again later"),
                                 f"the ingest secret cannot be read: {str(exc)[:500]}") from None
        if not isinstance(value, Mapping):   # JSON, but a string, a number, an array...
            raise _not_an_object()
        credentials = IngestCredentials.from_secret(
            value, batch_first_element=self.settings.ACCEPT_BATCH_FIRST_ELEMENT_SIGNATURE)
        redact(credentials.shared_secret, credentials.bearer_token,
               credentials.previous_shared_secret, credentials.previous_bearer_token)
        return credentials

    @tracer.capture_method(capture_response=False)
    def handle(self, event: dict[str, Any]) -> dict[str, Any]:
        request = IngestRequest.from_http_api_event(event)
        cause = None
        try:
            credentials = self.credentials()
            if authenticate(request, credentials) is not None and self._may_refresh():
                credentials = self.credentials(force=True)   # the secret may have been rotated
        except SecretUnusable as exc:
            response, cause = exc.response, exc.cause
        else:
            response = handle_ingest(request, self.router, credentials, self.publisher)
        try:
            self._observe(response, cause)
        finally:
            self.batch.flush()
        return response.to_http_api_response()

    def _may_refresh(self) -> bool:
        now = time.monotonic()
        if now - self._last_forced < FORCED_REFRESH_INTERVAL:
            return False
        self._last_forced = now
        return True

    def _observe(self, response: IngestResponse, cause: str | None = None) -> None:
        """Metrics and log lines; ``cause``: what the operator must know and the answer does not say."""
        body = response.body
        if response.status >= 400:
            error = body.get("error", {})
            code = str(error.get("code") or f"http_{response.status}")
            invalid = error.get("invalid") or []
            self.batch.add(Metric.REQUESTS_REJECTED, code=code)
            for reason in response.rejected:   # one invalid event, or a batch in which every event is invalid
                self.batch.add(Metric.EVENTS_REJECTED, reason=reason)
            # Also 0 (unauthenticated, unparsable): the invocation's blob is never empty.
            add(Metric.EVENTS_RECEIVED, 1 if code == Rejection.INVALID_EVENT else len(invalid))
            log = logger.error if response.status >= 500 else logger.warning
            log("request rejected", extra={"outcome": "rejected", "status": response.status, "code": code,
                                           "reason": error.get("message"), "invalid": invalid or None,
                                           "messageIds": error.get("messageIds"), "cause": cause})
            tracer.put_annotation("rejected", code)
            return

        invalid = body["invalid"]
        add(Metric.EVENTS_RECEIVED, body["accepted"] + len(invalid))
        add(Metric.EVENTS_ACCEPTED, body["accepted"])
        for entry, reason in zip(invalid, response.rejected, strict=True):
            self.batch.add(Metric.EVENTS_REJECTED, reason=reason)
            logger.warning("event rejected", extra={
                "outcome": "rejected", "correlation_id": entry.get("messageId"),
                "segmentMessageId": entry.get("messageId"), "index": entry["index"], "reason": entry["error"]})
        for message in response.queued:
            self.batch.add(Metric.MESSAGES_QUEUED, action=message.action)
            logger.info("queued", extra={"outcome": "queued", "correlation_id": message.message_id,
                                         "segmentMessageId": message.message_id, "action": message.action,
                                         "subscription": message.subscription,
                                         "eventType": message.event.get("type"),
                                         "eventName": message.event.get("event")})
        tracer.put_annotation("accepted", body["accepted"])


class IngestStartupFailure:
    """Stands in for IngestApp when it cannot start (the subscriptions file cannot be read or parsed, a
    setting is missing): every request gets our JSON 5xx, never API Gateway's bare 500, and Segment retries.

    The reason is logged once, at start; the answer names no file, path or setting (the caller may be anyone).
    """

    def __init__(self, exc: BaseException, batch: MetricBatch | None = None) -> None:
        if isinstance(exc, ConfigError):
            self.response = error_response(503, "subscriptions_unusable",
                                           "the destination cannot start: its subscriptions file cannot be used; "
                                           "the operator must fix it (see the ingest function's log)")
        else:
            self.response = error_response(500, "startup_failed",
                                           "the destination cannot start (see the ingest function's log)")
        self.batch = batch or MetricBatch()
        log_startup_failure(exc, "ingest")

    def handle(self, event: dict[str, Any]) -> dict[str, Any]:
        self.batch.add(Metric.REQUESTS_REJECTED, code=self.response.body["error"]["code"])
        self.batch.flush()
        return self.response.to_http_api_response()
