"""Error classes shared by the ingest and the workers.

Every failure the product can meet is one of two kinds (docs/architecture.md, "Error model"):
- ``PermanentError``: retrying cannot help (bad payload, 4xx from Qualtrics, ambiguous contact).
  The worker sends the message to its dead-letter queue at once, with the reason.
- ``RetryableError``: it may work later (network, timeout, 408, 429, 5xx but 501).
  The worker retries with growing delay; the last allowed attempt goes to the DLQ.

This module is pure: no boto3, no requests.
"""

from __future__ import annotations

import calendar
import json
import math
import time
from typing import Any

# Statuses Segment's platform retries (its documented retry rule); we use the same rule.
RETRYABLE_STATUSES = frozenset({408, 423, 429})


class DestinationError(Exception):
    """A classified failure. ``code`` is a stable snake_case name used in metrics and DLQ attributes."""

    retryable = False

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.request_id = request_id
        self.retry_after = retry_after

    def describe(self) -> dict[str, Any]:
        """The reason, as stored in DLQ message attributes and logs."""
        reason: dict[str, Any] = {"code": self.code, "message": self.message, "retryable": self.retryable}
        if self.status is not None:
            reason["status"] = self.status
        if self.request_id:
            reason["requestId"] = self.request_id
        return reason

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r}, status={self.status})"


class PermanentError(DestinationError):
    retryable = False


class RetryableError(DestinationError):
    retryable = True


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUSES or (500 <= status <= 599 and status != 501)


def error_from_response(
    status: int, body: bytes | str | None, headers: dict[str, str] | None = None
) -> DestinationError:
    """Classify a non-2xx Qualtrics answer. The body may be empty or not JSON: never assume it is."""
    message, error_code, request_id = _read_error_envelope(body)
    # Header names are case-insensitive; the adapter passes a plain dict, so look the name up in any case.
    retry_after = _parse_retry_after(_header(headers, "retry-after"), _header(headers, "date"))
    text = f"Qualtrics answered {status}" + (f": {message}" if message else "")
    if error_code:
        text += f" ({error_code})"
    if status == 401:
        code = "qualtrics_unauthorized"
    elif status == 429:
        code = "qualtrics_rate_limited"
    elif status in (408, 504):
        code = "qualtrics_timeout"
    elif status >= 500:
        code = "qualtrics_server_error"
    else:
        code = "qualtrics_rejected"
    cls = RetryableError if is_retryable_status(status) else PermanentError
    return cls(code, text, status=status, request_id=request_id, retry_after=retry_after)


def _read_error_envelope(body: bytes | str | None) -> tuple[str | None, str | None, str | None]:
    if not body:
        return None, None, None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, None, None
    meta = data.get("meta") if isinstance(data, dict) else None
    if not isinstance(meta, dict):
        return None, None, None
    error = meta.get("error")
    if not isinstance(error, dict):
        error = {}
    # Older Qualtrics services used other key names for the code; read them all.
    code = error.get("errorCode") or error.get("qualtricsErrorCode") or error.get("internalErrorCode")
    return error.get("errorMessage"), code, meta.get("requestId")


def _header(headers: dict[str, str] | None, name: str) -> str | None:
    return next((v for k, v in (headers or {}).items() if k.lower() == name), None)


def _parse_retry_after(value: str | None, date: str | None = None) -> float | None:
    """Seconds to wait: Retry-After in seconds, or as an HTTP-date counted from the answer's own Date."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        until = _http_date(value)
        if until is None:
            return None
        now = _http_date(date) if date else None
        seconds = until - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None  # "inf"/"nan" parse as floats but are no delay
    return max(seconds, 0.0)


# RFC 9110's HTTP-date: the IMF-fixdate, and the obsolete RFC 850 and asctime forms a recipient must accept.
_HTTP_DATE_FORMATS = ("%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT", "%a %b %d %H:%M:%S %Y")


def _http_date(value: str) -> float | None:
    if len(value) > 64:
        return None
    for form in _HTTP_DATE_FORMATS:
        try:
            return calendar.timegm(time.strptime(value.strip(), form))
        except ValueError:
            continue
    return None
