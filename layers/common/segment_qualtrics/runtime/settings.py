"""Environment variables, parsed once per cold start into pydantic models (fail fast, clear message)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from segment_qualtrics.destination.actions import ACTIONS

# Receives kept between the worker's last attempt and SQS's own redrive: an invocation that dies (timeout,
# out of memory) burns a receive without a word; up to this many such deaths still end with a reasoned DLQ.
CRASH_MARGIN_RECEIVES = 3
# Idempotency records outlive the DLQ by this much: a message redriven on the DLQ's last day goes back to
# its source queue, where it may wait up to that queue's retention (4 days) for its attempts; plus a day.
IDEMPOTENCY_MARGIN_SECONDS = 5 * 24 * 3600


class SettingsError(RuntimeError):
    pass


class _Settings(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    @classmethod
    def from_environ(cls, environ: Mapping[str, object] = os.environ):
        try:
            return cls.model_validate({k: v for k, v in environ.items() if v != ""})
        except ValidationError as exc:
            names = ", ".join(".".join(map(str, e["loc"])) + f" ({e['msg']})" for e in exc.errors())
            raise SettingsError(f"{cls.__name__}: bad or missing environment variables: {names}") from None


class IngestSettings(_Settings):
    INGEST_SECRET_ARN: str
    # action slug -> queue URL, from each action's queue variable (ADD_CONTACT_TO_XMD_QUEUE_URL...)
    QUEUE_URLS: dict[str, str] = Field(default_factory=dict)
    # Template parameter AcceptBatchFirstElementSignature: "true" accepts a batch signed over its first element.
    ACCEPT_BATCH_FIRST_ELEMENT_SIGNATURE: bool = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, object] = os.environ) -> IngestSettings:
        urls = {slug: environ[a.queue_variable] for slug, a in ACTIONS.items() if environ.get(a.queue_variable)}
        return super().from_environ({**environ, "QUEUE_URLS": urls})

    def queue_urls(self) -> dict[str, str]:
        return dict(self.QUEUE_URLS)


class WorkerSettings(_Settings):
    ACTION_SLUG: str
    QUALTRICS_SECRET_ARN: str
    QUEUE_URL: str
    DEAD_LETTER_QUEUE_URL: str
    IDEMPOTENCY_TABLE: str
    # Receives SQS allows before it moves a message to the DLQ itself (RedrivePolicy maxReceiveCount). The
    # worker stops CRASH_MARGIN_RECEIVES short of it, so that it dead-letters with a reason unless the
    # invocation itself keeps dying. MAX_ATTEMPTS may only lower that.
    MAX_RECEIVE_COUNT: int | None = Field(default=None, ge=1)
    MAX_ATTEMPTS: int | None = Field(default=None, ge=1)
    # The DLQ's MessageRetentionPeriod: idempotency records outlive it, so a late redrive is still protected.
    DEAD_LETTER_RETENTION_SECONDS: int = Field(default=14 * 24 * 3600, ge=60)
    QUALTRICS_BASE_URL: str | None = None
    # Base of the exponential backoff between attempts; tests and the local stack shorten it.
    RETRY_BASE_SECONDS: float = Field(default=30.0, ge=0)
    # Calls in flight at once within a batch, for the actions making one call per message (template parameter
    # QualtricsBatchConcurrency).
    QUALTRICS_BATCH_CONCURRENCY: int = Field(default=10, ge=1, le=100)
    # The brand's rate limit (delivery/rate_limit.py, docs/throughput.md): calls per window for the brand and
    # each endpoint class; 0 switches one budget off, RATE_LIMIT_ENABLED=false all of them. The window is a
    # minute; tests and benches shorten it to scale time down.
    RATE_LIMIT_ENABLED: bool = True
    RATE_LIMIT_BRAND: int = Field(default=3000, ge=0, le=10_000_000)
    RATE_LIMIT_CONTACT_WRITES: int = Field(default=500, ge=0, le=10_000_000)
    RATE_LIMIT_SEARCHES: int = Field(default=500, ge=0, le=10_000_000)
    RATE_LIMIT_TRANSACTIONS: int = Field(default=500, ge=0, le=10_000_000)
    RATE_LIMIT_WORKFLOWS: int = Field(default=500, ge=0, le=10_000_000)
    RATE_LIMIT_READS: int = Field(default=3000, ge=0, le=10_000_000)
    RATE_LIMIT_WINDOW_SECONDS: float = Field(default=60.0, gt=0, le=86_400)

    def rate_limits(self) -> dict[str, int]:
        """Budget name -> calls per window, the switched-off ones left out (empty: no rate limit)."""
        if not self.RATE_LIMIT_ENABLED:
            return {}
        limits = {"brand": self.RATE_LIMIT_BRAND, "contact_writes": self.RATE_LIMIT_CONTACT_WRITES,
                  "searches": self.RATE_LIMIT_SEARCHES, "transactions": self.RATE_LIMIT_TRANSACTIONS,
                  "workflows": self.RATE_LIMIT_WORKFLOWS, "reads": self.RATE_LIMIT_READS}
        return {name: limit for name, limit in limits.items() if limit}

    def max_attempts(self) -> int:
        """Attempts the worker makes itself: MAX_RECEIVE_COUNT less the crash margin (5 with neither set)."""
        if self.MAX_RECEIVE_COUNT is None:
            return self.MAX_ATTEMPTS or 5
        limit = max(self.MAX_RECEIVE_COUNT - CRASH_MARGIN_RECEIVES, 1)
        return min(self.MAX_ATTEMPTS or limit, limit)

    def idempotency_keep_seconds(self) -> int:
        """How long a key is kept: the DLQ's retention plus IDEMPOTENCY_MARGIN_SECONDS (see its comment)."""
        return self.DEAD_LETTER_RETENTION_SECONDS + IDEMPOTENCY_MARGIN_SECONDS
