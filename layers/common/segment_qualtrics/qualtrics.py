"""Qualtrics API adapter: the HTTP calls the three actions make, with classified errors.

Errors come out as ``PermanentError`` / ``RetryableError`` (errors.py) carrying the HTTP status and
the Qualtrics requestId. On a 401 the credentials are fetched once more (a rotated token) before
the call fails.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from .errors import DestinationError, PermanentError, RetryableError, error_from_response

DATACENTER = re.compile(r"^[a-zA-Z0-9-]+$")
CONNECT_TIMEOUT = 3.05
READ_TIMEOUT = 10.0   # Segment's framework default per request
USER_AGENT = "segment-qualtrics-destination/0.1"


@dataclass(frozen=True)
class QualtricsCredentials:
    api_token: str
    datacenter: str

    @classmethod
    def from_secret(cls, value: dict[str, Any]) -> QualtricsCredentials:
        token, datacenter = value.get("apiToken"), value.get("datacenter") or "iad1"
        if not token or not isinstance(token, str):
            raise PermanentError("qualtrics_not_configured", "the Qualtrics secret has no apiToken")
        if not isinstance(datacenter, str) or not DATACENTER.match(datacenter):
            raise PermanentError("qualtrics_not_configured",
                                 f"the Qualtrics datacenter {datacenter!r} is not of the form ^[a-zA-Z0-9-]+$")
        return cls(token, datacenter)


# Fetches the credentials; force=True bypasses any cache (after a 401).
CredentialsProvider = Callable[[bool], QualtricsCredentials]


@dataclass(frozen=True)
class TransactionResult:
    created: dict[str, str]                 # key -> CTR_ id
    unprocessed: dict[str, dict[str, Any]]  # key -> {"error", "errorMessage"}
    request_id: str | None


# Pages of a contact's transactions read to check whether an earlier attempt landed (100 a page).
MAX_TRANSACTION_PAGES = 100


class QualtricsClient:
    def __init__(
        self,
        credentials: CredentialsProvider,
        base_url: str | None = None,
        session: requests.Session | None = None,
        on_call: Callable[[str, int | None, float], None] | None = None,
    ) -> None:
        self._credentials = credentials
        self._base_override = base_url.rstrip("/") if base_url else None
        self._session = session or requests.Session()
        self._on_call = on_call   # observability hook: (operation, status or None, seconds)

    # --- URLs -------------------------------------------------------------------------------------
    def base_url(self, credentials: QualtricsCredentials) -> str:
        return self._base_override or f"https://{credentials.datacenter}.qualtrics.com"

    def is_qualtrics_url(self, url: str, credentials: QualtricsCredentials | None = None) -> bool:
        """The API token may go only to qualtrics.com (or a subdomain) or to QUALTRICS_BASE_URL's origin."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.scheme == "https" and (host == "qualtrics.com" or host.endswith(".qualtrics.com")):
            return True
        if self._base_override:
            base = urlsplit(self._base_override)
            return (parts.scheme, host, parts.port) == (base.scheme, (base.hostname or "").lower(), base.port)
        return False

    # --- calls ------------------------------------------------------------------------------------
    def whoami(self) -> dict[str, Any]:
        return self._call("whoami", "GET", "/API/v3/whoami")

    def create_contact(self, directory_id: str, contact: dict[str, Any]) -> str:
        data = self._call("create_contact", "POST", f"/API/v3/directories/{_seg(directory_id)}/contacts", contact)
        contact_id = (data.get("result") or {}).get("id")
        if not contact_id:
            raise RetryableError("qualtrics_bad_response", "create contact answered without result.id",
                                 request_id=_request_id(data))
        return contact_id

    def search_contacts(self, directory_id: str, identifiers: dict[str, str]) -> list[dict[str, Any]]:
        """Segment's lookup: one eq filter per identifier, joined with AND when there are two or more."""
        filters = [{"filterType": k, "comparison": "eq", "value": v} for k, v in identifiers.items()]
        criterion = filters[0] if len(filters) == 1 else {"conjunction": "and", "filters": filters}
        data = self._call("search_contacts", "POST",
                          f"/API/v3/directories/{_seg(directory_id)}/contacts/search", {"filter": criterion})
        return list((data.get("result") or {}).get("elements") or [])

    def create_transactions(self, directory_id: str, transactions: dict[str, dict[str, Any]]) -> TransactionResult:
        data = self._call("create_transactions", "POST",
                          f"/API/v3/directories/{_seg(directory_id)}/transactions", transactions)
        result = data.get("result") or {}
        created = {k: v.get("id", "") for k, v in (result.get("createdTransactions") or {}).items()}
        return TransactionResult(created, dict(result.get("unprocessedTransactions") or {}), _request_id(data))

    def list_contact_transactions(self, directory_id: str, contact_id: str) -> list[dict[str, Any]]:
        """Every transaction of a contact: page after page, following ``result.nextPage``."""
        data = self._call("list_transactions", "GET",
                          f"/API/v3/directories/{_seg(directory_id)}/contacts/{_seg(contact_id)}/transactions")
        elements: list[dict[str, Any]] = []
        for _ in range(MAX_TRANSACTION_PAGES):
            result = data.get("result") or {}
            elements += result.get("elements") or []
            next_page = result.get("nextPage")
            if not next_page:
                return elements
            if urlsplit(next_page).scheme:   # a whole URL: the token goes there only if it is Qualtrics
                if not self.is_qualtrics_url(next_page):
                    raise PermanentError("qualtrics_bad_response",
                                         f"list transactions: nextPage points outside Qualtrics "
                                         f"({urlsplit(next_page).hostname}); the token is not sent there")
                data = self._call("list_transactions", "GET", next_page, absolute=True)
            else:
                data = self._call("list_transactions", "GET", next_page)
        # Not read to the end, the list cannot prove a transaction absent: stop rather than risk a duplicate.
        raise PermanentError("too_many_transactions",
                             f"contact {contact_id} has more than {MAX_TRANSACTION_PAGES} pages of transactions; "
                             "could not check whether an earlier attempt recorded this one")

    def trigger_workflow(self, url: str, payload: dict[str, Any] | None) -> None:
        credentials = self._credentials(False)
        if not self.is_qualtrics_url(url, credentials):
            raise PermanentError("workflow_url_not_allowed",
                                 f"the workflow URL {urlsplit(url).scheme}://{urlsplit(url).hostname} is not "
                                 "Qualtrics; the API token is sent only to https://*.qualtrics.com or to "
                                 "QUALTRICS_BASE_URL")
        self._call("trigger_workflow", "POST", url, payload, absolute=True)

    # --- plumbing ---------------------------------------------------------------------------------
    def _call(self, operation: str, method: str, path: str, body: Any = None, *, absolute: bool = False) -> dict:
        credentials = self._credentials(False)
        try:
            return self._send(operation, method, path, body, credentials, absolute)
        except DestinationError as exc:
            if exc.status != 401:
                raise
        # The token may have been rotated since it was cached: fetch it once more, then give up.
        fresh = self._credentials(True)
        return self._send(operation, method, path, body, fresh, absolute)

    def _send(self, operation: str, method: str, path: str, body: Any,
              credentials: QualtricsCredentials, absolute: bool) -> dict:
        url = path if absolute else self.base_url(credentials) + path
        headers = {"X-API-TOKEN": credentials.api_token, "User-Agent": USER_AGENT, "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        started = time.perf_counter()
        status: int | None = None
        try:
            response = self._session.request(method, url, json=body, headers=headers,
                                             timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
            status = response.status_code
        except requests.Timeout as exc:
            raise RetryableError("qualtrics_timeout",
                                 f"{operation}: no answer from Qualtrics in time ({exc})") from None
        except requests.RequestException as exc:
            raise RetryableError("network_error", f"{operation}: could not reach Qualtrics: {exc}") from None
        finally:
            if self._on_call:
                self._on_call(operation, status, time.perf_counter() - started)
        if not 200 <= response.status_code < 300:
            raise error_from_response(response.status_code, response.content, dict(response.headers))
        if not response.content:
            return {}
        try:
            data = response.json()
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}


def _seg(value: str) -> str:
    """URL-encode one path segment (Segment puts ids in the path unencoded: a bug we do not copy)."""
    return quote(value, safe="")


def _request_id(data: dict[str, Any]) -> str | None:
    meta = data.get("meta")
    return meta.get("requestId") if isinstance(meta, dict) else None
