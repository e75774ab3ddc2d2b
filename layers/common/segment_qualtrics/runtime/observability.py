"""Logs, metrics and traces, set up once per process. Correlation id = Segment messageId.

Logs: Powertools Logger, JSON. Never log a token, a secret, a signature or an event body: log ids, codes
and counts. The formatter is the safety net for what slips through anyway: on every line it replaces the
values of sensitive keys (``*token*``, ``*secret*``, ``*signature*``, ``authorization``...), every
registered secret value (``redact``), emails (``j***@example.com``) and phone numbers (``***``).

Metrics: Powertools Metrics (EMF), namespace from POWERTOOLS_METRICS_NAMESPACE (SegmentQualtrics). Every
metric the code emits is declared once in ``METRICS`` with its unit and its dimensions; template.yaml's
alarms and dashboard read only declared metrics (tests/unit/test_observability_template.py checks it).
- ``add(metric, value)``: a metric whose dimensions are the invocation's own (service; in a worker,
  service + action, added once per invocation by ``begin_worker_invocation``). Flushed by ``log_metrics``.
- ``MetricBatch``: metrics with a dimension that varies inside one invocation (action at the ingest, retry
  reason, error code, Qualtrics operation or status). Collected, then flushed as one EMF blob per
  dimension set (Powertools ``EphemeralMetrics``), so they never leak dimensions into other metrics.

Traces: Powertools Tracer (X-Ray) only when tracing is on (template parameter TracingEnabled, which sets
POWERTOOLS_TRACE_DISABLED). Off, ``tracer`` is a stand-in that does nothing and aws-xray-sdk is never
imported: constructing a Powertools ``Tracer`` imports it (~200 ms of cold start) even when disabled.
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

__all__ = ["logger", "metrics", "tracer", "MetricUnit", "mask", "redact", "Metric", "METRICS", "MetricSpec",
           "add", "MetricBatch", "retry_reason", "NAMESPACE", "tracing_enabled", "set_process_keys"]

NAMESPACE = "SegmentQualtrics"   # the default; template.yaml sets POWERTOOLS_METRICS_NAMESPACE to the same


# ------------------------------------------------------------------------------------------------ masking

# Every pattern here runs on caller text (a logged event, an echoed value) and costs time linear in its length:
# possessive quantifiers (no backtracking) and no pattern that can scan far, fail, and be retried from the next
# character. What a pattern cannot say is judged in Python on each match, which is short.
# A domain: a run of letters, digits, dots and dashes holding a dot then a letter (the lookahead stops where
# the run does, and runs after different "@"s do not overlap).
_EMAIL_DOMAIN = re.compile(r"@(?=[A-Za-z0-9.-]*?\.[A-Za-z])([A-Za-z0-9.-]++)")
# Within one domain run, where the address regex this replaces ended it: after its last ".xx" label (letters).
# One anchored match: the greedy ".+" backtracks once over the run, in C.
_DOMAIN_END = re.compile(r".+\.[A-Za-z]{2,}", re.DOTALL)
_EMAIL_LOCAL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-")
_LOCAL_LIMIT = 64   # an email's local part is at most 64 characters: the backwards scan stops there
# A phone candidate: up to 6 digit groups, each maybe in parentheses, one space or dash between them; not inside
# a word, an id, a decimal, an IP or a URL (after ":" only as "tel:+..."). It starts with a character class, so
# the engine skips other text in C, and the lookbehinds (after that first character) reject "a1" there too.
_PHONE = re.compile(r"[+(\d](?<![\w./][+(\d])(?<!:[(\d])(?:(?<=\d)\d*+|(?<=\+)\(?\d++|(?<=\()\d++)"
                    r"\)?(?:[ -]?\(?\d++\)?){0,5}+")
_DIGITS = re.compile(r"\d++")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# Bare digits are a phone number only right after a word that says so ("phone: 4155550142").
_PHONE_WORD = re.compile(r"(?:phone|mobile|cell|tel|telephone|fax|sms|whatsapp)(?:[ _-]?(?:number|no))?[\"' :=#]{0,4}$",
                         re.IGNORECASE)
# Keys whose values are phone numbers whatever their shape: masked whole.
_PHONE_KEY = re.compile(r"phone|mobile|^(tel|telephone|cell|fax|sms|whatsapp)$", re.IGNORECASE)
_KEY_LIMIT = 64   # longer keys are nobody's field names: their values are treated as free text


def _mask_emails(text: str) -> str:
    """j***@example.com: the first character of the local part, then ***, then the domain."""
    if "@" not in text:
        return text
    out: list[str] = []
    done = 0   # text[:done] is in ``out``
    for match in _EMAIL_DOMAIN.finditer(text):
        end = _DOMAIN_END.match(match.group(1))   # "example.com" of "example.com." or "example.com123"
        if end is None:
            continue
        domain = end.group(0)
        at = match.start()
        start, floor = at, max(done, at - _LOCAL_LIMIT)
        while start > floor and text[start - 1] in _EMAIL_LOCAL:   # backwards, never past the last address
            start -= 1
        if start < at:
            out += [text[done:start + 1], "***@", domain]
            done = at + 1 + len(domain)
    return "".join(out) + text[done:] if out else text


def _joined(after: str) -> bool:
    """The next characters continue a word, an id, a time or a URL: what precedes is not a number alone."""
    return bool(after) and (after[0].isalnum() or after[0] in "_:/" or (after[0] == "." and after[1:2].isalnum()))


def _free_start(text: str, start: int) -> bool:
    """Not inside a word, an id, a decimal, an IP, a time or a URL; after ":" only as "tel:+..."."""
    before = text[start - 1] if start else ""
    return not before or not (before.isalnum() or before in "_./" or (before == ":" and text[start] != "+"))


def _phone_shaped(text: str, groups: list[re.Match[str]], start: int, end: int) -> bool:
    """text[start:end] (7 to 15 digits in ``groups``) is written as a phone number, or named as one."""
    if _joined(text[end:end + 2]):
        return False
    candidate = text[start:end]
    if _DATE.fullmatch(candidate):
        return False
    if candidate[0] == "+" or ("(" in candidate and ")" in candidate):
        return True
    if len(groups) >= 2:   # 555-010-1234, 1 800 555 0199: groups of 2+ digits after the first
        return all(g.end() - g.start() >= 2 for g in groups[1:])
    return _PHONE_WORD.search(text, max(0, start - 24), start) is not None


def _phones(text: str, match: re.Match[str]) -> list[tuple[int, int]]:
    """The spans of phone numbers among a candidate's digit groups: from the left, the longest first."""
    candidate = match.group(0)
    if len(candidate) - sum(candidate.count(c) for c in " -()+") < 7:
        return []   # fewer than 7 digits: most candidates end here, without a Python loop
    groups = list(_DIGITS.finditer(text, match.start(), match.end()))
    sums = [0]
    for group in groups:
        sums.append(sums[-1] + group.end() - group.start())
    if sums[-1] < 7:
        return []
    spans: list[tuple[int, int]] = []
    first = 0
    while first < len(groups):
        for last in range(len(groups) - 1, first - 1, -1):
            if not 7 <= sums[last + 1] - sums[first] <= 15:
                continue
            start, end = groups[first].start(), groups[last].end()
            while start > match.start() and text[start - 1] in "+(":
                start -= 1
            if not _free_start(text, start):
                break
            if end < match.end() and text[end] == ")" and text.count("(", start, end) > text.count(")", start, end):
                end += 1
            if _phone_shaped(text, groups[first:last + 1], start, end):
                spans.append((start, end))
                first = last
                break
        first += 1
    return spans


def _mask_phones(text: str) -> str:
    """*** for phone numbers; sizes, limits, counts, ids, dates, times, IPs and URLs are left alone."""
    out: list[str] = []
    done = 0
    for match in _PHONE.finditer(text):
        for start, end in _phones(text, match):
            out += [text[done:start], "***"]
            done = end
    return "".join(out) + text[done:] if out else text


REDACTED = "[REDACTED]"
# Keys whose values are never logged, at any depth (a logged event's headers, a secret's JSON...).
SENSITIVE_KEY = re.compile(r"token|secret|signature|password|passwd|authorization|api[-_]?key|cookie|credential",
                           re.IGNORECASE)
# Values that are ids or times: emails are masked there too, but digit runs are not phone numbers.
_NOT_FREE_TEXT = re.compile(r"(^|_)(id|ids|timestamp|time|location|arn|level|service|cold_start|function_.*)$"
                            r"|[a-z](Id|Ids|At|Url|Timestamp)$")
_MIN_SECRET_LENGTH = 8   # shorter values ("iad1") would redact ordinary words
_secrets: set[str] = set()


def mask(text: str) -> str:
    """Free text for a log line: secrets replaced, cut to LOG_TEXT_LIMIT, emails (j***@example.com) and phone
    numbers (***) masked."""
    return _clean_text(text, free_text=True)


def redact(*values: str | None) -> None:
    """Register secret values (API token, shared secret): they are replaced by [REDACTED] in every log line."""
    for value in values:
        if isinstance(value, str) and len(value) >= _MIN_SECRET_LENGTH:
            _secrets.add(value)


# A logged string longer than this is cut (after secrets are replaced, before masking): CloudWatch keeps 256 KB
# of a line anyway, and masking a caller's 4 MB body on every line would cost the function its time.
LOG_TEXT_LIMIT = 32 * 1024


def _cut(text: str) -> str:
    """The first LOG_TEXT_LIMIT characters, back to a space so no email or phone number is cut in half."""
    if len(text) <= LOG_TEXT_LIMIT:
        return text
    head = text[:LOG_TEXT_LIMIT]
    head = head[:max(head.rfind(" "), LOG_TEXT_LIMIT - 256)]
    return f"{head}... [{len(text) - len(head)} characters cut]"


def _clean_text(text: str, free_text: bool) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _mask_emails(_cut(text))
    return _mask_phones(text) if free_text else text


def _clean(value: Any, key: str = "") -> Any:
    if isinstance(value, str):
        free_text = len(key) > _KEY_LIMIT or not _NOT_FREE_TEXT.search(key)
        if value and free_text and len(key) <= _KEY_LIMIT and _PHONE_KEY.search(key):
            return "***"
        return _clean_text(value, free_text)
    if isinstance(value, int | float) and not isinstance(value, bool) and len(key) <= _KEY_LIMIT \
            and _PHONE_KEY.search(key):
        return "***"
    if isinstance(value, dict):
        return {k: REDACTED if isinstance(k, str) and SENSITIVE_KEY.search(k) and v not in (None, "")
                else _clean(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v, key) for v in value]
    return value


class RedactingFormatter(LambdaPowertoolsFormatter):
    """The Powertools JSON formatter, cleaning every line before it is written (see the module docstring).

    ``process_keys`` go on every line for the life of the process, even through ``clear_state`` (which
    ``inject_lambda_context(clear_state=True)`` runs before it logs the event): a worker's action.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.process_keys: dict[str, Any] = {}

    def serialize(self, log: dict[str, Any]) -> str:  # type: ignore[override]
        try:
            if self.process_keys:
                log = {**log, **{k: v for k, v in self.process_keys.items() if k not in log}}
            log = _clean(log)
        except Exception:  # noqa: BLE001 - never lose a line to the cleaner; drop the message instead
            log = {k: v for k, v in log.items() if k in ("level", "location", "timestamp", "service")}
            log["message"] = "log line withheld: it could not be cleaned"
        return super().serialize(log)


_formatter = RedactingFormatter()
logger = Logger(logger_formatter=_formatter)


def set_process_keys(**keys: Any) -> None:
    """Keys on every line this process writes (a worker's action: one function, one action, for its life)."""
    _formatter.process_keys.update(keys)


# ------------------------------------------------------------------------------------------------ metrics

class Metric(StrEnum):
    """Every metric name in the SegmentQualtrics namespace."""

    COLD_START = "ColdStart"                       # Powertools, log_metrics(capture_cold_start_metric=True)
    # ingest
    EVENTS_RECEIVED = "EventsReceived"             # events in authenticated, parsable bodies
    EVENTS_ACCEPTED = "EventsAccepted"             # valid events (queued, or matching no subscription)
    EVENTS_REJECTED = "EventsRejected"             # invalid events, by reason
    REQUESTS_REJECTED = "RequestsRejected"         # non-2xx answers, by error code
    MESSAGES_QUEUED = "MessagesQueued"             # messages SQS accepted, by action
    # workers (every one also carries the action)
    BATCH_SIZE = "BatchSize"
    MESSAGES_DELIVERED = "MessagesDelivered"
    DUPLICATES_SKIPPED = "DuplicatesSkipped"
    MESSAGES_RETRIED = "MessagesRetried"
    RETRIES_BY_REASON = "RetriesByReason"          # reason: 429, 5xx, timeout, network, other
    MESSAGES_DEAD_LETTERED = "MessagesDeadLettered"
    DEAD_LETTERS_BY_CODE = "DeadLettersByCode"     # errorCode: DestinationError.code
    DEAD_LETTER_SEND_FAILED = "DeadLetterSendFailed"
    QUALTRICS_CALLS = "QualtricsCalls"
    QUALTRICS_LATENCY = "QualtricsLatency"         # by operation; its SampleCount is the calls per operation
    QUALTRICS_ERRORS = "QualtricsErrors"           # non-2xx answers by status ("429", "500"...; "no_response")
    CONTACT_LOOKUPS = "ContactLookups"             # upsertContactTransaction: contacts resolved by lookup
    CONTACT_CACHE_HITS = "ContactCacheHits"        # ... of which the contact cache answered
    CONTACTS_DELETED = "ContactsDeleted"           # deleteContact: contacts Qualtrics deleted (404s not counted)
    RATE_LIMIT_WAITS = "RateLimitWaits"            # Qualtrics calls that waited for the brand's rate limit
    RATE_LIMIT_WAIT_TIME = "RateLimitWaitTime"     # ... how long each waited
    RATE_LIMIT_HAND_BACKS = "RateLimitHandBacks"   # messages sent back to their queue untried: no call left in time
    # every function, at each cold start
    SUBSCRIPTIONS_INVALID = "SubscriptionsInvalid"  # subscriptions switched off for problems, by function


@dataclass(frozen=True)
class MetricSpec:
    unit: MetricUnit
    dimensions: frozenset[str]   # the exact dimension set CloudWatch files the metric under
    emitted_by: str = "code"     # "powertools" for ColdStart


def _spec(unit: MetricUnit, *dimensions: str, emitted_by: str = "code") -> MetricSpec:
    return MetricSpec(unit, frozenset({"service", *dimensions}), emitted_by)


_COUNT, _MS = MetricUnit.Count, MetricUnit.Milliseconds
METRICS: dict[Metric, MetricSpec] = {
    Metric.COLD_START: _spec(_COUNT, "function_name", emitted_by="powertools"),
    Metric.EVENTS_RECEIVED: _spec(_COUNT),
    Metric.EVENTS_ACCEPTED: _spec(_COUNT),
    Metric.EVENTS_REJECTED: _spec(_COUNT, "reason"),
    Metric.REQUESTS_REJECTED: _spec(_COUNT, "code"),
    Metric.MESSAGES_QUEUED: _spec(_COUNT, "action"),
    Metric.BATCH_SIZE: _spec(_COUNT, "action"),
    Metric.MESSAGES_DELIVERED: _spec(_COUNT, "action"),
    Metric.DUPLICATES_SKIPPED: _spec(_COUNT, "action"),
    Metric.MESSAGES_RETRIED: _spec(_COUNT, "action"),
    Metric.RETRIES_BY_REASON: _spec(_COUNT, "action", "reason"),
    Metric.MESSAGES_DEAD_LETTERED: _spec(_COUNT, "action"),
    Metric.DEAD_LETTERS_BY_CODE: _spec(_COUNT, "action", "errorCode"),
    Metric.DEAD_LETTER_SEND_FAILED: _spec(_COUNT, "action"),
    Metric.QUALTRICS_CALLS: _spec(_COUNT, "action"),
    Metric.QUALTRICS_LATENCY: _spec(_MS, "action", "operation"),
    Metric.QUALTRICS_ERRORS: _spec(_COUNT, "action", "status"),
    Metric.CONTACT_LOOKUPS: _spec(_COUNT, "action"),
    Metric.CONTACT_CACHE_HITS: _spec(_COUNT, "action"),
    Metric.CONTACTS_DELETED: _spec(_COUNT, "action"),
    Metric.RATE_LIMIT_WAITS: _spec(_COUNT, "action"),
    Metric.RATE_LIMIT_WAIT_TIME: _spec(_MS, "action"),
    Metric.RATE_LIMIT_HAND_BACKS: _spec(_COUNT, "action"),
    Metric.SUBSCRIPTIONS_INVALID: _spec(_COUNT, "function"),   # function: ingest or the worker's action
}

metrics = Metrics(namespace=os.getenv("POWERTOOLS_METRICS_NAMESPACE") or NAMESPACE)


def add(metric: Metric, value: float = 1) -> None:
    """Add to a metric filed under the invocation's dimensions (flushed by the handler's log_metrics)."""
    metrics.add_metric(name=metric.value, unit=METRICS[metric].unit, value=value)


class MetricBatch:
    """Metrics with per-value dimensions, collected during an invocation, flushed as one blob per dimension set.

    Counts are summed; other units (latency) keep every value (EMF takes up to 100 per metric and blob).
    """

    def __init__(self, emit: Callable[[dict[str, str], dict[Metric, list[float]]], None] | None = None) -> None:
        self._values: dict[tuple[tuple[str, str], ...], dict[Metric, list[float]]] = defaultdict(dict)
        self._emit = emit or _emit_blob

    def add(self, metric: Metric, value: float = 1, **dimensions: str) -> None:
        spec = METRICS[metric]
        if set(dimensions) | {"service"} != spec.dimensions:
            raise ValueError(f"{metric.value} is filed under {sorted(spec.dimensions)}, not {sorted(dimensions)}")
        values = self._values[tuple(sorted((k, str(v)) for k, v in dimensions.items()))].setdefault(metric, [])
        if spec.unit == MetricUnit.Count and values:
            values[0] += value
        else:
            values.append(value)

    def flush(self) -> None:
        pending, self._values = self._values, defaultdict(dict)
        for dimensions, values in pending.items():
            try:
                self._emit(dict(dimensions), values)
            except Exception:  # noqa: BLE001 - a metric must never fail a delivery
                logger.warning("metrics not written", extra={"metrics": sorted(m.value for m in values)})


def _emit_blob(dimensions: dict[str, str], values: dict[Metric, list[float]]) -> None:
    blob = EphemeralMetrics(namespace=os.getenv("POWERTOOLS_METRICS_NAMESPACE") or NAMESPACE)
    for name, value in dimensions.items():
        blob.add_dimension(name=name, value=value)
    for metric, numbers in values.items():
        for number in numbers:
            blob.add_metric(name=metric.value, unit=METRICS[metric].unit, value=number)
    blob.flush_metrics()


def retry_reason(code: str, status: int | None) -> str:
    """The RetriesByReason dimension of a retryable DestinationError: 429, 5xx, timeout, network or other."""
    if status == 429 or code == "qualtrics_rate_limited":
        return "429"
    if code == "qualtrics_timeout" or status in (408, 504):
        return "timeout"
    if code == "network_error":
        return "network"
    if status is not None and 500 <= status <= 599:
        return "5xx"
    return "other"   # in_progress, stale_contact, qualtrics_bad_response, 423...


# ------------------------------------------------------------------------------------------------ tracing

def tracing_enabled(environ: Any = os.environ) -> bool:
    """What Powertools itself decides (Tracer._is_tracer_disabled), without importing aws-xray-sdk."""
    if str(environ.get("POWERTOOLS_TRACE_DISABLED", "false")).strip().lower() in ("1", "true", "yes", "on"):
        return False
    in_lambda = bool(environ.get("LAMBDA_TASK_ROOT"))
    emulated = bool(environ.get("AWS_SAM_LOCAL") or environ.get("AWS_CHALICE_CLI_MODE"))
    return in_lambda and not emulated


class _NoTracer:
    """Tracer's surface that this package uses, doing nothing (tracing off)."""

    disabled = True

    def capture_method(self, method: Callable | None = None, **_: Any) -> Any:
        return method if method is not None else (lambda decorated: decorated)

    capture_lambda_handler = capture_method

    def put_annotation(self, key: str, value: Any) -> None:
        pass

    def put_metadata(self, key: str, value: Any, namespace: str | None = None) -> None:
        pass


def _make_tracer() -> Any:
    if not tracing_enabled():
        return _NoTracer()
    from aws_lambda_powertools import Tracer

    # Qualtrics calls (requests) and AWS calls (botocore) become subsegments; nothing else is patched.
    return Tracer(patch_modules=("botocore", "requests"))


tracer = _make_tracer()

logging.getLogger("aws_xray_sdk").setLevel(logging.ERROR)   # its "no segment" chatter, when tracing is on
