"""Environment variables, parsed once per cold start into pydantic models (fail fast, clear message)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

ACTION_QUEUE_VARIABLES = {
    "addContactToXmd": "ADD_CONTACT_TO_XMD_QUEUE_URL",
    "upsertContactTransaction": "UPSERT_CONTACT_TRANSACTION_QUEUE_URL",
    "triggerXflowWorkflow": "TRIGGER_XFLOW_WORKFLOW_QUEUE_URL",
}


class SettingsError(RuntimeError):
    pass


class _Settings(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ):
        try:
            return cls.model_validate({k: v for k, v in environ.items() if v != ""})
        except ValidationError as exc:
            names = ", ".join(".".join(map(str, e["loc"])) + f" ({e['msg']})" for e in exc.errors())
            raise SettingsError(f"{cls.__name__}: bad or missing environment variables: {names}") from None


class IngestSettings(_Settings):
    INGEST_SECRET_ARN: str
    ADD_CONTACT_TO_XMD_QUEUE_URL: str | None = None
    UPSERT_CONTACT_TRANSACTION_QUEUE_URL: str | None = None
    TRIGGER_XFLOW_WORKFLOW_QUEUE_URL: str | None = None
    # Template parameter AcceptBatchFirstElementSignature: "true" accepts a batch signed over its first element.
    ACCEPT_BATCH_FIRST_ELEMENT_SIGNATURE: bool = False

    def queue_urls(self) -> dict[str, str]:
        return {a: getattr(self, v) for a, v in ACTION_QUEUE_VARIABLES.items() if getattr(self, v)}


class WorkerSettings(_Settings):
    ACTION_SLUG: str
    QUALTRICS_SECRET_ARN: str
    QUEUE_URL: str
    DEAD_LETTER_QUEUE_URL: str
    IDEMPOTENCY_TABLE: str
    MAX_ATTEMPTS: int = Field(default=5, ge=1)
    QUALTRICS_BASE_URL: str | None = None
    # Base of the exponential backoff between attempts; tests and the local stack shorten it.
    RETRY_BASE_SECONDS: float = Field(default=30.0, ge=0)
