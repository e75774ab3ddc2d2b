"""Qualtrics API adapter: the HTTP calls the actions make, with classified errors.

Errors come out as ``PermanentError`` / ``RetryableError`` (errors.py) carrying the HTTP status and
the Qualtrics requestId. On a 401 the credentials are fetched once more (a rotated token) before
the call fails.

The API token goes only to Qualtrics: every request leaves through ``QualtricsClient._send``, which
asks ``token_url_refusal`` (the one rule, see docs/security.md) about the exact URL requests prepared,
and never follows a redirect (a 3xx is the permanent error ``qualtrics_redirect``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from segment_qualtrics.delivery.qualtrics_api import TransactionResult
from segment_qualtrics.destination.errors import DestinationError, PermanentError, RetryableError, error_from_response

DATACENTER = re.compile(r"^[a-zA-Z0-9-]+$")   # applied with fullmatch: "$" alone lets a final newline through
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
        if not isinstance(datacenter, str) or not DATACENTER.fullmatch(datacenter):
            raise PermanentError("qualtrics_not_configured",
                                 f"the Qualtrics datacenter {datacenter!r} is not of the form ^[a-zA-Z0-9-]+$")
        return cls(token, datacenter)


# Fetches the credentials; force=True bypasses any cache (after a 401).
CredentialsProvider = Callable[[bool], QualtricsCredentials]


# --- where the API token may go -------------------------------------------------------------------

@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int


DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_URL_LENGTH = 8192
# The start of a URL as the rule accepts it: scheme://host[:port] and then /, ?, # or the end. No userinfo,
# no percent-escapes, no backslash, nothing but ASCII letters, digits, dots and hyphens in the host (or a
# bracketed IPv6 literal, for a QUALTRICS_BASE_URL on ::1).
_URL_START = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://"
                        r"(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?(?=[/?#]|\Z)")
# qualtrics.com or a subdomain of it: DNS labels only (no empty label, so no trailing dot).
_QUALTRICS_HOST = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*qualtrics\.com")


def token_url_refusal(url: str, base_origin: Origin | None = None) -> str | None:
    """Why the API token may not be sent to ``url``; None when it may. The one rule, used for every request.

    Allowed: https on the default port to qualtrics.com or a subdomain, and QUALTRICS_BASE_URL's exact
    origin (``base_origin``). The URL is read three ways: a strict pattern on the raw text, urllib3's
    ``parse_url`` (what requests prepares the URL with) and ``urllib.parse.urlsplit`` (what requests'
    adapter picks the connection's host and port with). Unless all three name the same scheme, host
    and port, the URL is refused, so the host checked is the host connected to.
    """
    origin, problem = _read_origin(url)
    if origin is None:
        return problem
    if origin == base_origin:
        return None
    if origin.scheme != "https":
        return f"scheme {origin.scheme!r} is not https"
    if origin.port != DEFAULT_PORTS["https"]:
        return f"port {origin.port} is not 443"
    if not _QUALTRICS_HOST.fullmatch(origin.host):
        return f"host {_shown(origin.host)} is not qualtrics.com or a subdomain of it"
    return None


def origin_of(url: str | None) -> Origin | None:
    """QUALTRICS_BASE_URL's origin, read as the rule reads any URL (None: no override, or one that no URL matches)."""
    return _read_origin(url)[0] if url else None


def _read_origin(url: str) -> tuple[Origin | None, str]:
    if not isinstance(url, str) or not url:
        return None, "the URL is empty"
    if len(url) > MAX_URL_LENGTH:
        return None, f"the URL is longer than {MAX_URL_LENGTH} characters"
    if not url.isascii() or not url.isprintable():
        return None, "the URL has non-ASCII or control characters"
    if " " in url or "\\" in url:
        return None, "the URL has a space or a backslash"
    start = _URL_START.match(url)
    if start is None:
        return None, "the URL does not start with scheme://host[:port] followed by /, ? or # (no userinfo, no escapes)"
    scheme = start["scheme"].lower()
    if scheme not in DEFAULT_PORTS:
        return None, f"scheme {_shown(scheme)} is not https"
    raw_port = int(start["port"]) if start["port"] else DEFAULT_PORTS[scheme]
    if not 0 < raw_port < 65536:
        return None, f"the URL's port {raw_port} is out of range"
    try:
        parsed = parse_url(url)
        split = urlsplit(url)
        split_port = split.port
    except (LocationParseError, ValueError) as exc:
        return None, f"the URL does not parse ({type(exc).__name__})"
    host = start["host"].lower().strip("[]")
    readings = {
        (scheme, host, raw_port),
        ((parsed.scheme or "").lower(), (parsed.host or "").lower().strip("[]"),
         parsed.port or DEFAULT_PORTS.get(scheme)),
        (split.scheme.lower(), (split.hostname or "").lower(), split_port or DEFAULT_PORTS.get(scheme)),
    }
    if len(readings) != 1 or parsed.auth is not None or split.username is not None:
        return None, "the URL's host reads differently to different parsers"
    return Origin(scheme, host, raw_port), ""


def _shown(text: str | None, limit: int = 80) -> str:
    """A hostile string, safe in an error message: repr (escapes control characters), cut short."""
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _location_host(location: str | None) -> str:
    if not location:
        return "no Location"
    try:
        parsed = parse_url(location)
    except (LocationParseError, ValueError):
        return f"an unreadable Location ({_shown(location)})"
    if not parsed.host:
        return f"a Location without a host ({_shown(location)})"
    return f"Location host {_shown(parsed.host + (f':{parsed.port}' if parsed.port else ''))}"


# Pages of a contact's transactions read to check whether an earlier attempt landed (100 a page).
MAX_TRANSACTION_PAGES = 100


class QualtricsClient:   # implements delivery/qualtrics_api.py's QualtricsApi
    def __init__(
        self,
        credentials: CredentialsProvider,
        base_url: str | None = None,
        session: requests.Session | None = None,
        on_call: Callable[[str, int | None, float], None] | None = None,
        limiter: Any = None,
    ) -> None:
        self._credentials = credentials
        self._base_override = base_url.rstrip("/") if base_url else None
        self._base_origin = origin_of(self._base_override)
        self._session = session or requests.Session()
        self._on_call = on_call   # observability hook: (operation, status or None, seconds)
        # The brand's rate limit (delivery/rate_limit.py RateLimiter): ``before(operation)`` waits for a token or
        # raises RateLimited; ``throttled(operation, retry_after)`` drains the bucket after a 429.
        self._limiter = limiter

    @classmethod
    def with_token(cls, api_token: str, datacenter: str = "iad1", base_url: str | None = None,
                   **kwargs: Any) -> QualtricsClient:
        """A client on fixed credentials (the ops tools), checked as the worker checks its secret."""
        credentials = QualtricsCredentials.from_secret({"apiToken": api_token, "datacenter": datacenter})
        return cls(lambda force: credentials, base_url, **kwargs)

    # --- URLs -------------------------------------------------------------------------------------
    def base_url(self, credentials: QualtricsCredentials) -> str:
        if self._base_override:
            return self._base_override
        if not DATACENTER.fullmatch(credentials.datacenter):
            raise PermanentError("qualtrics_not_configured",
                                 f"the Qualtrics datacenter {_shown(credentials.datacenter)} is not of the form "
                                 "^[a-zA-Z0-9-]+$")
        return f"https://{credentials.datacenter}.qualtrics.com"

    def is_qualtrics_url(self, url: str) -> bool:
        """Whether the API token may go to ``url`` (``token_url_refusal``, with QUALTRICS_BASE_URL's origin)."""
        return token_url_refusal(url, self._base_origin) is None

    # --- calls ------------------------------------------------------------------------------------
    def whoami(self, timeout: tuple[float, float] | None = None) -> dict[str, Any]:
        return self._call("whoami", "GET", "/API/v3/whoami", timeout=timeout)

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
        return _elements("search_contacts", data)

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
            elements += _elements("list_transactions", data)
            next_page = data["result"].get("nextPage")
            if not next_page:
                return elements
            if not isinstance(next_page, str):
                raise PermanentError("qualtrics_bad_response", "list transactions: nextPage is not a string")
            # A whole URL is sent as it is; anything else must be a path ("/..."), joined to the base URL.
            # Either way the rule in _send decides whether the token may go there.
            absolute = "://" in next_page
            if not absolute and not (next_page.startswith("/") and not next_page.startswith("//")):
                raise PermanentError("qualtrics_bad_response",
                                     f"list transactions: nextPage {_shown(next_page)} points outside Qualtrics: "
                                     "neither a URL nor a path; the token is not sent there")
            data = self._call("list_transactions", "GET", next_page, absolute=absolute,
                              refused=("qualtrics_bad_response", "list transactions: nextPage points outside "
                                       "Qualtrics"))
        # Not read to the end, the list cannot prove a transaction absent: stop rather than risk a duplicate.
        raise PermanentError("too_many_transactions",
                             f"contact {contact_id} has more than {MAX_TRANSACTION_PAGES} pages of transactions; "
                             "could not check whether an earlier attempt recorded this one")

    def delete_contact(self, directory_id: str, contact_id: str) -> bool:
        """DELETE one contact: True when Qualtrics deleted it, False when it answered 404 (no such contact, or
        no such directory: the caller tells them apart)."""
        try:
            self._call("delete_contact", "DELETE",
                       f"/API/v3/directories/{_seg(directory_id)}/contacts/{_seg(contact_id)}")
        except DestinationError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # --- bulk: transaction-contacts imports (the backfill tool) -------------------------------------
    def create_transaction_batch(self, directory_id: str, creation_date: str) -> str:
        """An empty transaction batch: an import's ``transactionMeta.batchId`` must name an existing one."""
        data = self._call("create_transaction_batch", "POST",
                          f"/API/v3/directories/{_seg(directory_id)}/transactionbatches",
                          {"transactionIds": [], "creationDate": creation_date})
        batch_id = (data.get("result") or {}).get("id")
        if not isinstance(batch_id, str) or not batch_id:
            raise RetryableError("qualtrics_bad_response", "create transaction batch answered without result.id",
                                 request_id=_request_id(data))
        return batch_id

    def start_import(self, directory_id: str, mailing_list_id: str, body: dict[str, Any], *,
                     timeout: tuple[float, float] | None = None) -> str:
        """Submit a transaction-contacts import; its id (PGR_...). Not idempotent: the caller records the id.
        ``timeout``: (connect, read) seconds; an upload of up to 5 MB may take longer than the default."""
        data = self._call("start_import", "POST", _import_path(directory_id, mailing_list_id), body,
                          timeout=timeout)
        import_id = (data.get("result") or {}).get("id")
        if not isinstance(import_id, str) or not import_id:
            raise RetryableError("qualtrics_bad_response", "the import answered without result.id",
                                 request_id=_request_id(data))
        return import_id

    def import_status(self, directory_id: str, mailing_list_id: str, import_id: str, *,
                      summary: bool = False) -> dict[str, Any]:
        """An import's ``result``: status, percentComplete, contacts (counts, unprocessed indexes); with
        ``summary`` also ``contacts.errors`` (index, errorCode, errorMessage of each unprocessed contact)."""
        path = f"{_import_path(directory_id, mailing_list_id)}/{_seg(import_id)}"
        answer = self._call("import_summary", "GET", path + "/summary") if summary else \
            self._call("import_status", "GET", path)
        result = answer.get("result")
        if not isinstance(result, dict) or not isinstance(result.get("status"), str):
            raise RetryableError("qualtrics_bad_response", "the import status has no result.status")
        return result

    def trigger_workflow(self, url: str, payload: dict[str, Any] | None) -> None:
        self._call("trigger_workflow", "POST", url, payload, absolute=True,
                   refused=("workflow_url_not_allowed", "the workflow URL is not Qualtrics"))

    # --- plumbing ---------------------------------------------------------------------------------
    def _call(self, operation: str, method: str, path: str, body: Any = None, *, absolute: bool = False,
              refused: tuple[str, str] | None = None, timeout: tuple[float, float] | None = None) -> dict:
        credentials = self._credentials(False)
        try:
            return self._limited(operation, method, path, body, credentials, absolute, refused, timeout)
        except DestinationError as exc:
            if exc.status != 401:
                raise
        # The token may have been rotated since it was cached: fetch it once more, then give up.
        fresh = self._credentials(True)
        return self._limited(operation, method, path, body, fresh, absolute, refused, timeout)

    def _limited(self, operation: str, *args: Any) -> dict:
        """``_send`` once the rate limit admits the call; a 429 slows every worker down (the bucket drains)."""
        if self._limiter is None:
            return self._send(operation, *args)
        self._limiter.before(operation)
        try:
            return self._send(operation, *args)
        except DestinationError as exc:
            if exc.status == 429:
                self._limiter.throttled(operation, exc.retry_after)
            raise

    def _send(self, operation: str, method: str, path: str, body: Any, credentials: QualtricsCredentials,
              absolute: bool, refused: tuple[str, str] | None, timeout: tuple[float, float] | None) -> dict:
        """The only place a request with the API token leaves: the rule checked on the prepared URL, no redirects."""
        url = path if absolute else self.base_url(credentials) + path
        headers = {"X-API-TOKEN": credentials.api_token, "User-Agent": USER_AGENT, "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        prepared: requests.PreparedRequest | None = None
        problem = token_url_refusal(url, self._base_origin)
        if problem is None:
            try:
                prepared = self._session.prepare_request(requests.Request(method, url, json=body, headers=headers))
            except requests.exceptions.InvalidJSONError as exc:   # NaN, Infinity: retrying cannot help
                raise PermanentError("invalid_payload", f"{operation}: the request body is not JSON ({exc})") from None
            except (requests.RequestException, ValueError) as exc:
                problem = f"requests cannot prepare it ({type(exc).__name__})"
            else:
                # What requests made of it (and of the session's settings) is what goes on the wire: ask again.
                problem = token_url_refusal(prepared.url or "", self._base_origin)
        if problem is not None or prepared is None:
            code, what = refused or ("qualtrics_url_not_allowed", f"{operation}: the URL is not Qualtrics")
            raise PermanentError(code, f"{what} ({_origin_text(url)}: {problem}); the API token is sent only "
                                       "to https://qualtrics.com or a subdomain, or to QUALTRICS_BASE_URL's origin")
        started = time.perf_counter()
        status: int | None = None
        try:
            settings = self._session.merge_environment_settings(prepared.url or url, {}, None, None, None)
            response = self._session.send(prepared, allow_redirects=False,
                                          timeout=timeout or (CONNECT_TIMEOUT, READ_TIMEOUT), **settings)
            status = response.status_code
        except requests.Timeout as exc:
            raise RetryableError("qualtrics_timeout",
                                 f"{operation}: no answer from Qualtrics in time ({exc})") from None
        except requests.RequestException as exc:
            raise RetryableError("network_error", f"{operation}: could not reach Qualtrics: {exc}") from None
        finally:
            if self._on_call:
                self._on_call(operation, status, time.perf_counter() - started)
        if 300 <= response.status_code < 400:
            # requests would keep X-API-TOKEN on a redirect to another host: never follow one.
            raise PermanentError("qualtrics_redirect",
                                 f"{operation}: Qualtrics answered {response.status_code} with "
                                 f"{_location_host(response.headers.get('Location'))}; redirects are not followed, "
                                 "so the API token stays with Qualtrics", status=response.status_code)
        if not 200 <= response.status_code < 300:
            raise error_from_response(response.status_code, response.content, dict(response.headers))
        if not response.content:
            return {}
        try:
            data = response.json()
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}


def _origin_text(url: object) -> str:   # any value a mapping produced, not only a str
    """scheme://host of a refused URL as urllib3 reads it, for the error message (never the path: it may hold ids)."""
    if not isinstance(url, str):
        return f"a {type(url).__name__}"
    try:
        parsed = parse_url(url)
    except (LocationParseError, ValueError):
        return _shown(url)
    return _shown(f"{parsed.scheme}://{parsed.host}" if parsed.host else url)


def _seg(value: str) -> str:
    """URL-encode one path segment (Segment puts ids in the path unencoded: a bug we do not copy).

    "", "." and ".." are refused: requests removes dot segments, so ``directories/../contacts`` would become
    ``/API/v3/contacts`` and ``contacts/..`` the directory itself (a DELETE there is not a contact's)."""
    if value in ("", ".", ".."):
        raise PermanentError("invalid_payload", f"{value!r} is not an id: in a URL path it would name another "
                                                "resource")
    return quote(value, safe="")


def _import_path(directory_id: str, mailing_list_id: str) -> str:
    return f"/API/v3/directories/{_seg(directory_id)}/mailinglists/{_seg(mailing_list_id)}/transactioncontacts"


def _elements(operation: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    """``result.elements`` of a list answer. Any other shape proves nothing: read as "none", it would let a
    recovering attempt create the contact or the transaction a second time."""
    result = data.get("result")
    elements = result.get("elements") if isinstance(result, dict) else None
    if not isinstance(elements, list) or not all(isinstance(element, dict) for element in elements):
        raise RetryableError("qualtrics_bad_response", f"{operation}: the answer has no list of objects in "
                             "result.elements", request_id=_request_id(data))
    return elements


def _request_id(data: dict[str, Any]) -> str | None:
    meta = data.get("meta")
    return meta.get("requestId") if isinstance(meta, dict) else None
