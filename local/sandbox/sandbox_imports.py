"""Transaction-contacts import jobs for the local Qualtrics sandbox (the bulk path).

Bookkeeping only: request-shape checks, the per-contact checks, the job queue and its progress. Applying a
contact to a directory (dedup, transactions) is the sandbox's, passed in as a function, so the bulk path
deduplicates exactly as create-contact does.

Progress is computed from elapsed time, so no thread is needed: every API call (and every admin read)
advances the jobs to "now". A running job processes `contactsPerSecond` contacts per second, in input
order; at most `maxConcurrentJobs` run at once, the next waiting job starts when one finishes, and a new
import is refused (429) while `maxQueuedJobs` are unfinished.
"""

from __future__ import annotations

import heapq
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MAX_CONTACTS = 10_000  # per import (Qualtrics documents it)
MAX_BODY_BYTES = 5 * 1024 * 1024  # per import (Qualtrics documents 5 MB)
DEFAULT_CONFIG = {"contactsPerSecond": 2000.0, "maxConcurrentJobs": 25, "maxQueuedJobs": 100}
CONTACT_STRING_FIELDS = ("firstName", "lastName", "email", "phone", "extRef", "language")
CONTACT_KEYS = (*CONTACT_STRING_FIELDS, "unsubscribed", "embeddedData", "transactionData")
# Interpretation: Qualtrics documents no email rule; one "@" with text on both sides and no spaces.
EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+")


class ImportRefused(Exception):
    """The whole request is refused (no job): rendered by the sandbox as a Qualtrics error."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


class ContactRejected(Exception):
    """One contact of an import is invalid: it goes to the job's `unprocessed` indexes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_import_config(spec: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Merge {"contactsPerSecond"?, "maxConcurrentJobs"?, "maxQueuedJobs"?} over `base` (the defaults)."""
    if not isinstance(spec, dict):
        raise ValueError("imports config must be a JSON object")
    config = dict(base or DEFAULT_CONFIG)
    for key, value in spec.items():
        if key not in DEFAULT_CONFIG:
            raise ValueError(f"unknown imports field {key!r}; known: {', '.join(DEFAULT_CONFIG)}")
        if not _finite_number(value):
            raise ValueError(f"{key} must be a number")
        if key == "contactsPerSecond":
            if not 0.001 <= value <= 10_000_000:
                raise ValueError("contactsPerSecond must be between 0.001 and 10000000")
            config[key] = float(value)
        else:
            if (isinstance(value, float) and not value.is_integer()) or not 1 <= value <= 10_000:
                raise ValueError(f"{key} must be a whole number from 1 to 10000")
            config[key] = int(value)
    if config["maxQueuedJobs"] < config["maxConcurrentJobs"]:
        raise ValueError("maxQueuedJobs counts running jobs too, so it cannot be below maxConcurrentJobs")
    return config


def _finite_number(value: Any) -> bool:
    # bool is an int subclass but not a JSON number; math.isfinite overflows on a huge int (which is finite).
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _scalar(value: Any) -> bool:
    return isinstance(value, str | bool) or _finite_number(value)


def parse_import_body(body: dict[str, Any]) -> tuple[list[Any], dict[str, Any] | None]:
    """Request-level checks (400): the contacts list and transactionMeta. Contacts are checked one by one later."""
    for key in body:
        if key not in ("contacts", "transactionMeta"):
            raise ImportRefused(400, f"Unknown field '{key}'.")
    contacts = body.get("contacts")
    if not isinstance(contacts, list) or not contacts:
        raise ImportRefused(400, "Field 'contacts' is required: a non-empty list of contacts.")
    if len(contacts) > MAX_CONTACTS:
        raise ImportRefused(400, f"An import holds at most {MAX_CONTACTS} contacts; this one has {len(contacts)}.")
    meta = body.get("transactionMeta")
    if meta is not None:
        if not isinstance(meta, dict) or set(meta) - {"batchId", "fields"}:
            raise ImportRefused(400, "Field 'transactionMeta' must be an object with 'batchId' and 'fields'.")
        batch_id, fields = meta.get("batchId"), meta.get("fields")
        if not isinstance(batch_id, str) or not batch_id:
            raise ImportRefused(400, "Field 'transactionMeta.batchId' is required: an existing batch id.")
        if not isinstance(fields, list) or not all(isinstance(f, str) and f for f in fields):
            raise ImportRefused(400, "Field 'transactionMeta.fields' is required: a list of field names.")
        meta = {"batchId": batch_id, "fields": list(dict.fromkeys(fields))}
    elif any(isinstance(c, dict) and "transactionData" in c for c in contacts):
        raise ImportRefused(400, "Field 'transactionMeta' is required when a contact has 'transactionData'.")
    return contacts, meta


def validate_import_contact(entry: Any, meta: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(create-contact fields, transaction data or None), or ContactRejected with the reason."""
    if not isinstance(entry, dict):
        raise ContactRejected("INVALID_CONTACT", "A contact must be a JSON object.")
    for key, value in entry.items():
        if key not in CONTACT_KEYS:
            raise ContactRejected("INVALID_CONTACT", f"Unknown field '{key}'.")
        if value is None:
            raise ContactRejected("INVALID_CONTACT", f"Field '{key}' must not be null; omit it instead.")
        if key in CONTACT_STRING_FIELDS and not isinstance(value, str):
            raise ContactRejected("INVALID_CONTACT", f"Field '{key}' must be a string.")
    if "unsubscribed" in entry and not isinstance(entry["unsubscribed"], bool):
        raise ContactRejected("INVALID_CONTACT", "Field 'unsubscribed' must be a boolean.")
    if "email" in entry and not EMAIL_RE.fullmatch(entry["email"].strip()):
        raise ContactRejected("INVALID_EMAIL", f"Invalid email address {entry['email'][:100]!r}.")
    fields_of_meta = set(meta["fields"]) if meta else set()
    embedded = entry.get("embeddedData", {})
    _check_scalars(embedded, "embeddedData")
    for key in embedded:
        if key in fields_of_meta:
            raise ContactRejected("INVALID_CONTACT", f"Field 'embeddedData.{key}' is a transaction field.")
    data = entry.get("transactionData")
    if data is not None:
        _check_scalars(data, "transactionData")
        for key in data:
            if key not in fields_of_meta:
                message = f"Field 'transactionData.{key}' is not in transactionMeta.fields."
                raise ContactRejected("INVALID_TRANSACTION_DATA", message)
    fields = {k: v for k, v in entry.items() if k != "transactionData"}
    return fields, (dict(data) if data is not None else None)


def _check_scalars(value: Any, name: str) -> None:
    if not isinstance(value, dict):
        raise ContactRejected("INVALID_CONTACT", f"Field '{name}' must be an object.")
    for key, item in value.items():
        if not _scalar(item):
            raise ContactRejected("INVALID_CONTACT", f"Field '{name}.{key}' must be a string, number or boolean.")


@dataclass
class ImportJob:
    import_id: str
    directory_id: str
    mailing_list_id: str
    contacts: list[Any]
    meta: dict[str, Any] | None
    created: float
    fail_message: str | None = None  # a fault made this import fail as a whole...
    fail_at: int = 0  # ...after this many contacts
    started: float | None = None
    finished: float | None = None
    processed: int = 0
    status: str = "queued"
    counts: dict[str, int] = field(default_factory=lambda: {"added": 0, "updated": 0, "failed": 0})
    transactions_created: int = 0
    unprocessed: list[dict[str, Any]] = field(default_factory=list)
    invalid_emails: list[str] = field(default_factory=list)
    total: int = 0  # len(contacts): the contacts themselves are dropped once the job ends

    def __post_init__(self) -> None:
        self.total = len(self.contacts)

    @property
    def done(self) -> bool:
        return self.status in ("complete", "failed")

    def percent(self) -> int:
        if self.status == "complete":
            return 100
        return self.processed * 100 // self.total

    def status_result(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "id": self.import_id,
            "status": self.status,
            "percentComplete": self.percent(),
            "contacts": {"count": dict(self.counts), "unprocessed": [u["index"] for u in self.unprocessed]},
            "transactions": {"count": {"created": self.transactions_created}},
        }
        if self.status == "failed":
            result["error"] = {"errorCode": "IMPORT_FAILED", "errorMessage": self.fail_message}
        return result

    def summary_result(self) -> dict[str, Any]:
        result = self.status_result()
        result["contacts"]["errors"] = [dict(u) for u in self.unprocessed]
        result["invalidEmails"] = list(self.invalid_emails)
        return result


# apply(job, index, fields, transaction data) -> "added" | "updated" | None (None: nothing applied)
Apply = Callable[[ImportJob, int, dict[str, Any], dict[str, Any] | None], str | None]


class ImportJobs:
    """The brand's import jobs. Not thread-safe on its own: the sandbox calls it with its lock held."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.config = dict(config or DEFAULT_CONFIG)
        self.jobs: dict[str, ImportJob] = {}
        self._freed: list[float] = []  # heap: when each slot not yet taken again was freed

    def unfinished(self) -> list[ImportJob]:
        return [j for j in self.jobs.values() if not j.done]

    def submit(self, job: ImportJob, now: float) -> None:
        unfinished = self.unfinished()
        if len(unfinished) >= self.config["maxQueuedJobs"]:
            running = [j for j in unfinished if j.status == "inProgress"]
            wait = min((self._finish_time(j) - now for j in running), default=1.0)
            raise ImportRefused(
                429,
                f"Too many import jobs: {len(unfinished)} are queued or running "
                f"(at most {self.config['maxQueuedJobs']}). Retry when one finishes.",
                retry_after=max(wait, 0.001),
            )
        self.jobs[job.import_id] = job
        self._start_waiting(now)

    def advance(self, now: float, apply: Apply) -> None:
        """Process every job up to `now`; a finished job frees its slot for the next waiting one at its finish time."""
        while True:
            for job in [j for j in self.jobs.values() if j.status == "inProgress"]:
                self._run(job, now, apply)
            if not self._start_waiting(now):
                return

    def _finish_time(self, job: ImportJob) -> float:
        assert job.started is not None
        end = min(job.fail_at, job.total) if job.fail_message is not None else job.total
        return job.started + end / self.config["contactsPerSecond"]

    def _run(self, job: ImportJob, now: float, apply: Apply) -> None:
        assert job.started is not None
        speed = self.config["contactsPerSecond"]
        end = min(job.fail_at, job.total) if job.fail_message is not None else job.total
        target = min(end, math.floor((now - job.started) * speed + 1e-9))
        while job.processed < target:
            index = job.processed
            entry = job.contacts[index]
            try:
                fields, data = validate_import_contact(entry, job.meta)
            except ContactRejected as exc:
                job.counts["failed"] += 1
                job.unprocessed.append({"index": index, "errorCode": exc.code, "errorMessage": exc.message})
                if exc.code == "INVALID_EMAIL":
                    job.invalid_emails.append(entry["email"])
            else:
                outcome = apply(job, index, fields, data)
                if outcome is not None:
                    job.counts[outcome] += 1
            job.processed += 1
        if job.processed >= end:
            job.status = "failed" if job.fail_message is not None else "complete"
            job.finished = self._finish_time(job)
            job.contacts = []  # a long backfill keeps hundreds of jobs: keep their counts, not their input
            heapq.heappush(self._freed, job.finished)

    def _start_waiting(self, now: float) -> bool:
        """Start waiting jobs (first come, first served) while slots are free; True if any started."""
        started = False
        running = sum(1 for j in self.jobs.values() if j.status == "inProgress")
        for job in [j for j in self.jobs.values() if j.status == "queued"]:
            if running >= self.config["maxConcurrentJobs"]:
                break
            # It started when the slot it takes was freed, or when it arrived if a slot was free then.
            freed_at = heapq.heappop(self._freed) if self._freed else job.created
            job.started = min(now, max(job.created, freed_at))
            job.status = "inProgress"
            running += 1
            started = True
        return started


def new_import_id() -> str:
    return f"PGR_{uuid.uuid4().hex[:15]}"
