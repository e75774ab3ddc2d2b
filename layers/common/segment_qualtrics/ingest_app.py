"""Wiring of the ingest function: settings, subscriptions, secret and SQS adapters, built once."""

from __future__ import annotations

import time
from typing import Any

import boto3
from aws_lambda_powertools.utilities import parameters

from .aws import SqsPublisher
from .ingest import IngestCredentials, IngestRequest, IngestResponse, authenticate, handle_ingest
from .observability import MetricUnit, logger, metrics
from .settings import IngestSettings
from .subscriptions import Subscription, load_subscriptions

FORCED_REFRESH_INTERVAL = 60.0   # at most one uncached secret read a minute, after a failed check


class IngestApp:
    def __init__(self, settings: IngestSettings, subscriptions: list[Subscription], publisher: SqsPublisher) -> None:
        self.settings = settings
        self.subscriptions = subscriptions
        self.publisher = publisher
        self._last_forced = 0.0

    @classmethod
    def from_environment(cls) -> IngestApp:
        settings = IngestSettings.from_environ()
        subscriptions = load_subscriptions()
        publisher = SqsPublisher(boto3.client("sqs"), settings.queue_urls())
        return cls(settings, subscriptions, publisher)

    def credentials(self, force: bool = False) -> IngestCredentials:
        value = parameters.get_secret(self.settings.INGEST_SECRET_ARN, transform="json", force_fetch=force)
        return IngestCredentials.from_secret(value or {})

    def handle(self, event: dict[str, Any]) -> dict[str, Any]:
        request = IngestRequest.from_http_api_event(event)
        credentials = self.credentials()
        if authenticate(request, credentials) is not None and self._may_refresh():
            credentials = self.credentials(force=True)   # the secret may have been rotated
        response = handle_ingest(request, self.subscriptions, credentials, self.publisher)
        self._observe(response)
        return response.to_http_api_response()

    def _may_refresh(self) -> bool:
        now = time.monotonic()
        if now - self._last_forced < FORCED_REFRESH_INTERVAL:
            return False
        self._last_forced = now
        return True

    def _observe(self, response: IngestResponse) -> None:
        body = response.body
        if response.status >= 400:
            error = body.get("error", {})
            metrics.add_metric(name="RequestsRejected", unit=MetricUnit.Count, value=1)
            logger.warning("request rejected", extra={"outcome": "rejected", "status": response.status,
                                                      "code": error.get("code"), "reason": error.get("message"),
                                                      "invalid": error.get("invalid")})
            return
        metrics.add_metric(name="EventsAccepted", unit=MetricUnit.Count, value=body["accepted"])
        if body["invalid"]:
            metrics.add_metric(name="EventsRejected", unit=MetricUnit.Count, value=len(body["invalid"]))
            for entry in body["invalid"]:
                logger.warning("event rejected", extra={"outcome": "rejected", "segmentMessageId":
                                                        entry.get("messageId"), "index": entry["index"],
                                                        "reason": entry["error"]})
        for message in response.queued:
            logger.info("queued", extra={"outcome": "queued", "segmentMessageId": message.message_id,
                                         "action": message.action, "subscription": message.subscription,
                                         "eventType": message.event.get("type"),
                                         "eventName": message.event.get("event")})
        metrics.add_metric(name="MessagesQueued", unit=MetricUnit.Count, value=len(response.queued))
