"""Local stand-in for the Qualtrics REST API v3 endpoints the destination uses.

Standard library only, so it runs anywhere the repo's Python runs (local stack, integration tests,
benchmarks). It follows Qualtrics' documented API v3 behaviour, not any client: where the
documentation is silent the chosen behaviour is marked "Interpretation:" in a comment.

Served endpoints (all need ``X-API-TOKEN``):
    GET  /API/v3/whoami
    GET  /API/v3/directories[/]
    POST /API/v3/directories/{directoryId}/contacts
    GET  /API/v3/directories/{directoryId}/contacts/{contactId}
    DELETE /API/v3/directories/{directoryId}/contacts/{contactId}   (404 for an unknown contact or directory)
    POST /API/v3/directories/{directoryId}/contacts/search
    POST /API/v3/directories/{directoryId}/transactions
    GET  /API/v3/directories/{directoryId}/contacts/{contactId}/transactions
    POST /API/v3/directories/{directoryId}/transactionbatches
    POST /API/v3/directories/{directoryId}/mailinglists/{mailingListId}/transactioncontacts
    GET  /API/v3/directories/{directoryId}/mailinglists/{mailingListId}/transactioncontacts/{importId}[/summary]
    POST /inbound-event/v1/events/json/triggers?urlTokenId=...   (also /JSON/)

Seeded state (also after reset): directory POOL_SANDBOX ("Sandbox directory", deduplicates on
externalDataReference only) with mailing list CG_SANDBOX.

Admin endpoints (no token, plain JSON, not recorded in the request log):
    GET    /_sandbox/state        directories (contacts in GET shape, transactions) + workflowRuns
    GET    /_sandbox/requests     every API request in arrival order: method, path, query, status,
                                  body (parsed JSON or null), headers (token masked), time
    POST   /_sandbox/reset        back to the seeded state; clears the log, the faults, the counts and
                                  the import jobs; limits, latency and import settings go back to the
                                  start configuration
    POST   /_sandbox/directories  {"directoryId", "name"?, "deduplicationCriteria"?, "mailingLists"?}
                                  creates or replaces (empties) a directory; unlisted criteria are off
    GET    /_sandbox/faults       pending faults
    POST   /_sandbox/faults       {"pathPattern" (re.search on the path), "status", "method"?,
                                  "times"?: 1, "retryAfter"?, "delaySeconds"?: 0,
                                  "when"?: "before"|"after", "body"?, "location"?,
                                  "failImport"?: message, "failImportAtPercent"?: 0}
    DELETE /_sandbox/faults       drop all faults
    GET|POST|DELETE /_sandbox/limits   {"brand"?, "<endpoint class>"?: calls per window, "windowSeconds"?: 60}
    GET|POST|DELETE /_sandbox/latency  {"seconds"?, "classes"?: {"<endpoint class>": s}, "jitterSeconds"?, "seed"?}
    GET    /_sandbox/stats        per endpoint class: served, refused (by the limits), statuses answered
    GET|POST /_sandbox/imports    import jobs; settings {"contactsPerSecond"?, "maxConcurrentJobs"?, "maxQueuedJobs"?}

A fault hits the next `times` matching API requests. "before" answers `status` without applying the
request; "after" applies it, then answers `status` (a response lost after Qualtrics accepted).
Status 0 leaves the answer alone, so status 0 + delaySeconds is a slow success. "location" sets the
Location header: with a 3xx status it is a redirect (to test that clients do not follow one).
"failImport" on an import request lets the import be accepted, then fail as a whole once
"failImportAtPercent" of its contacts are processed.

Limits, latency and imports (local/sandbox/sandbox_limits.py, local/sandbox/sandbox_imports.py; docs/local-stack.md):
every API call belongs to an endpoint class (contact_writes, searches, transactions, workflows, reads,
imports, other); a call past its class's budget or the brand-wide one gets 429 with Retry-After and is
not applied. Start configuration: the constructor's limits/latency/imports arguments, or the
SANDBOX_LIMITS / SANDBOX_LATENCY / SANDBOX_IMPORTS environment variables (JSON) for the CLI and
local/stack.py. By default there are no limits and no added latency.

CLI: ``python -m local.sandbox.qualtrics_sandbox --port 8765 --token TOKEN`` (Ctrl-C stops it).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import copy
import hmac
import json
import math
import operator
import os
import re
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from local.sandbox.sandbox_imports import (
    MAX_BODY_BYTES as IMPORT_MAX_BODY,
)
from local.sandbox.sandbox_imports import (
    ImportJob,
    ImportJobs,
    ImportRefused,
    new_import_id,
    parse_import_body,
    parse_import_config,
)
from local.sandbox.sandbox_limits import Latency, RateLimiter, Stats, endpoint_class, parse_latency, parse_limits

SEED_DIRECTORY_ID = "POOL_SANDBOX"
SEED_DIRECTORY_NAME = "Sandbox directory"
SEED_MAILING_LIST_ID = "CG_SANDBOX"
SEED_DEDUPLICATION = {
    "email": False,
    "firstName": False,
    "lastName": False,
    "externalDataReference": True,
    "phone": False,
}

# Deduplication criterion name -> contact field it compares.
DEDUP_FIELDS = {
    "email": "email",
    "firstName": "firstName",
    "lastName": "lastName",
    "externalDataReference": "extRef",
    "phone": "phone",
}
CONTACT_STRING_FIELDS = ("firstName", "lastName", "email", "phone", "extRef", "language")

WHOAMI = {
    "brandId": "sandbox",
    "userId": "UR_SANDBOX",
    "userName": "sandbox-user#sandbox",
    "accountType": "UT_BRANDADMIN",
    "firstName": "Sandbox",
    "lastName": "User",
    "email": "sandbox-user@example.com",
    "datacenter": "sandbox",
}

API_PREFIXES = ("/API/v3/", "/inbound-event/")
ADMIN_PREFIX = "/_sandbox"
WORKFLOW_MAX_BODY = 100 * 1024  # JSON-event payload limit (SUP-JSON: 100 KB)
MAX_REQUEST_BYTES = 8 * 1024 * 1024  # above every endpoint's limit (imports: 5 MB); larger is refused unread
SEARCH_DEFAULT_PAGE_SIZE = 100
SEARCH_MAX_PAGE_SIZE = 100  # Interpretation: reference gives only the default (100); larger -> 400.
SEARCH_MAX_OFFSET = 10_000  # reference: paginating beyond the first 10,000 contacts -> 400
TRANSACTION_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
TRANSACTION_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
DATE_ONLY_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
NOT_FOUND_MESSAGE = "The requested resource does not exist."

# errorCode per status. QVAL_* (validation), ATP_2 (no auth header), DCD_7 (unknown token) and
# AuthZ_2.0 are codes seen in real Qualtrics responses; the others are descriptive placeholders.
ERROR_CODES = {
    400: "QVAL_1",
    401: "DCD_7",
    403: "AuthZ_2.0",
    404: "NOT_FOUND",
    411: "LENGTH_REQUIRED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "TOO_MANY_REQUESTS",
    500: "INTERNAL_ERROR",
    502: "BAD_GATEWAY",
    503: "SERVICE_UNAVAILABLE",
    504: "GATEWAY_TIMEOUT",
}


# --------------------------------------------------------------------------------------------
# Envelopes and small helpers
# --------------------------------------------------------------------------------------------


class ApiError(Exception):
    """Raised anywhere in request handling; rendered as a Qualtrics error envelope."""

    def __init__(
        self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or ERROR_CODES.get(status, f"HTTP_{status}")
        self.headers = headers or {}


def status_text(status: int) -> str:
    """meta.httpStatus, e.g. "400 - Bad Request" (Qualtrics words 503 its own way)."""
    if status == 503:
        return "503 - Temporary Internal Server Error"
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    return f"{status} - {phrase}"


def make_meta(status: int) -> dict[str, Any]:
    return {"httpStatus": status_text(status), "requestId": str(uuid.uuid4())}


def error_envelope(status: int, message: str, code: str) -> dict[str, Any]:
    meta = make_meta(status)
    meta["error"] = {"errorMessage": message, "errorCode": code}
    return {"meta": meta}


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:15]}"


def now_ms() -> int:
    return int(time.time() * 1000)


def iso_from_ms(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_number(value: Any) -> bool:
    # bool is an int subclass in Python, but JSON true/false are not numbers.
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_scalar(value: Any) -> bool:
    return isinstance(value, str | bool) or is_number(value)


def normalized(value: str | None) -> str:
    """Comparison form for dedup and search: trimmed, case-insensitive; missing == empty."""
    return (value or "").strip().casefold()


def stringify(value: str | int | float | bool) -> str:
    """Embedded data is stored as strings (GEN); render like JSON/JS would, not like Python."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes) -> Any:
    """Strict JSON: Python accepts NaN/Infinity by default, a JSON API does not. Too deep is invalid too."""
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


# --------------------------------------------------------------------------------------------
# Request / response / state types
# --------------------------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    raw_body: bytes
    import_failure: tuple[str, float] | None = None  # set by a failImport fault: (message, at percent)

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)

    def json_object(self) -> dict[str, Any]:
        if not self.raw_body:
            raise ApiError(400, "Request body is required and must be a JSON object.")
        try:
            body = parse_json(self.raw_body)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise ApiError(400, f"Request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "Request body must be a JSON object.")
        return body


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def ok(result: Any = None) -> Response:
    body: dict[str, Any] = {"meta": make_meta(200)}
    if result is not None:
        body = {"result": result, **body}
    return Response(200, body)


@dataclass
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Callable[..., Response]
    max_body: int | None = None


def route(method: str, pattern: str, handler: Callable[..., Response], **kwargs: Any) -> Route:
    return Route(method, re.compile(pattern), handler, **kwargs)


def find_route(routes: tuple[Route, ...], req: Request) -> tuple[Route, dict[str, str]]:
    for candidate in routes:
        match = candidate.pattern.fullmatch(req.path)
        if match and candidate.method == req.method:
            # Path parts arrive percent-encoded (clients may or may not encode them).
            return candidate, {k: unquote(v) for k, v in match.groupdict().items()}
    raise ApiError(404, NOT_FOUND_MESSAGE)


@dataclass
class Directory:
    directory_id: str
    name: str
    deduplication: dict[str, bool]
    mailing_lists: list[str]
    is_default: bool = False
    contacts: dict[str, dict[str, Any]] = field(default_factory=dict)  # insertion-ordered
    transactions: list[dict[str, Any]] = field(default_factory=list)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)  # transaction batches: id -> batch
    _index: dict[tuple[str, ...], dict[str, Any]] | None = field(default=None, repr=False, compare=False)

    def summary(self) -> dict[str, Any]:
        return {
            "directoryId": self.directory_id,
            "name": self.name,
            "contactCount": len(self.contacts),
            "isDefault": self.is_default,
            "deduplicationCriteria": dict(self.deduplication),
        }

    def state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "deduplicationCriteria": dict(self.deduplication),
            "mailingLists": list(self.mailing_lists),
            "contacts": [contact_get_shape(c) for c in self.contacts.values()],
            "transactions": copy.deepcopy(self.transactions),
        }

    def dedup_key(self, fields: dict[str, Any]) -> tuple[str, ...] | None:
        """What automatic deduplication compares: every enabled criterion's value (trimmed,
        case-insensitive). None when dedup is off or a criterion has no value (that never matches)."""
        wanted = tuple(normalized(fields.get(DEDUP_FIELDS[name])) for name, on in self.deduplication.items() if on)
        if not wanted or not all(wanted):
            return None
        return wanted

    def find_duplicate(self, fields: dict[str, Any]) -> dict[str, Any] | None:
        """The existing contact automatic deduplication would merge `fields` into, if any (the first one)."""
        wanted = self.dedup_key(fields)
        return None if wanted is None else self._dedup_index().get(wanted)

    def upsert(self, fields: dict[str, Any], now: int) -> tuple[dict[str, Any], bool]:
        """Create a contact, or merge into the one dedup finds: (contact, created). Create-contact and imports."""
        contact = self.find_duplicate(fields)
        created = contact is None
        if contact is None:
            contact = new_contact(now)
            self.contacts[contact["contactId"]] = contact
        apply_contact_fields(contact, fields, now)
        # A merge keeps the key (every criterion matched); a new contact's key was free, else it would have merged.
        key = self.dedup_key(contact)
        if key is not None and self._index is not None:
            self._index.setdefault(key, contact)
        return contact, created

    def put_contact(self, contact: dict[str, Any]) -> None:
        """Store a contact as is (admin seeding, which may replace one): the dedup index is rebuilt on next use."""
        self.contacts[contact["contactId"]] = contact
        self._index = None

    def remove_contact(self, contact_id: str) -> None:
        """Delete a contact and its transactions; the dedup index is rebuilt on next use."""
        del self.contacts[contact_id]
        # Interpretation: Qualtrics documents only "DELETE ... -> 200"; a contact's data (its transactions)
        # goes with it, as a person asking to be forgotten expects.
        self.transactions = [t for t in self.transactions if t["contactId"] != contact_id]
        self._index = None

    def _dedup_index(self) -> dict[tuple[str, ...], dict[str, Any]]:
        # dedup key -> the first contact (insertion order) with it, so a lookup is not a scan of the directory.
        if self._index is None:
            self._index = {}
            for contact in self.contacts.values():
                key = self.dedup_key(contact)
                if key is not None:
                    self._index.setdefault(key, contact)
        return self._index


def seed_directory() -> Directory:
    return Directory(
        directory_id=SEED_DIRECTORY_ID,
        name=SEED_DIRECTORY_NAME,
        deduplication=dict(SEED_DEDUPLICATION),
        mailing_lists=[SEED_MAILING_LIST_ID],
        is_default=True,
    )


# --------------------------------------------------------------------------------------------
# Contacts
# --------------------------------------------------------------------------------------------


def validate_contact(body: dict[str, Any]) -> dict[str, Any]:
    """Check a create-contact body; errors name the offending field."""
    for key, value in body.items():
        if value is None:
            raise ApiError(400, f"Field '{key}' must not be null; omit it instead.")
        if key in CONTACT_STRING_FIELDS:
            if not isinstance(value, str):
                raise ApiError(400, f"Field '{key}' must be a string.")
        elif key == "unsubscribed":
            if not isinstance(value, bool):
                raise ApiError(400, "Field 'unsubscribed' must be a boolean.")
        elif key == "embeddedData":
            validate_embedded_data(value)
        else:
            raise ApiError(400, f"Unknown field '{key}'.")
    return body


def validate_embedded_data(value: Any) -> None:
    if not isinstance(value, dict):
        raise ApiError(400, "Field 'embeddedData' must be an object.")
    for key, item in value.items():
        if not is_scalar(item):
            kind = _json_type(item)
            raise ApiError(400, f"Field 'embeddedData.{key}' must be a string, number or boolean, not {kind}")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def new_contact(now: int) -> dict[str, Any]:
    contact: dict[str, Any] = {"contactId": new_id("CID_"), "creationDate": now, "lastModified": now}
    contact.update({f: None for f in CONTACT_STRING_FIELDS})
    contact.update({"embeddedData": {}, "unsubscribed": False, "unsubscribeDate": None})
    return contact


def apply_contact_fields(contact: dict[str, Any], fields: dict[str, Any], now: int) -> None:
    """Given fields overwrite; embeddedData is merged key by key (dedup update semantics)."""
    for key in CONTACT_STRING_FIELDS:
        if key in fields:
            contact[key] = fields[key]
    for key, value in fields.get("embeddedData", {}).items():
        contact["embeddedData"][key] = stringify(value)
    if "unsubscribed" in fields and fields["unsubscribed"] != contact["unsubscribed"]:
        contact["unsubscribed"] = fields["unsubscribed"]
        contact["unsubscribeDate"] = now if fields["unsubscribed"] else None
    contact["lastModified"] = now


def contact_get_shape(contact: dict[str, Any]) -> dict[str, Any]:
    """GET .../contacts/{id} shape (GEN Result5): epoch-ms dates, extRef/phone names."""
    email = contact["email"]
    return {
        "contactId": contact["contactId"],
        "creationDate": contact["creationDate"],
        "lastModified": contact["lastModified"],
        "firstName": contact["firstName"],
        "lastName": contact["lastName"],
        "email": email,
        "emailDomain": email.rpartition("@")[2].lower() if email and "@" in email else None,
        "phone": contact["phone"],
        "extRef": contact["extRef"],
        "language": contact["language"],
        "embeddedData": dict(contact["embeddedData"]),
        "segmentMembership": {},
        "directoryUnsubscribed": contact["unsubscribed"],
        "directoryUnsubscribeDate": contact["unsubscribeDate"],
        "stats": {},
        "mailingListMembership": {},
        "skipped": None,
    }


def contact_search_shape(contact: dict[str, Any], embedded: bool, segments: bool) -> dict[str, Any]:
    """Search element shape (GEN ElementsInner1): `id`, `phoneNumber`, `externalDataReference`.

    Interpretation: GEN types these dates as strings (GET uses epoch ms); we use ISO-8601 UTC.
    """
    element = {
        "id": contact["contactId"],
        "creationDate": iso_from_ms(contact["creationDate"]),
        "lastModified": iso_from_ms(contact["lastModified"]),
        "firstName": contact["firstName"],
        "lastName": contact["lastName"],
        "email": contact["email"],
        "phoneNumber": contact["phone"],
        "externalDataReference": contact["extRef"],
        "language": contact["language"],
        "unsubscribed": contact["unsubscribed"],
        "unsubscribeDate": iso_from_ms(contact["unsubscribeDate"]),
        "stats": {},
    }
    if embedded:
        element["embeddedData"] = dict(contact["embeddedData"])
    if segments:
        element["segmentMembership"] = {}
    return element


# --------------------------------------------------------------------------------------------
# Contact search filters: each criterion compiles to a predicate over a stored contact
# --------------------------------------------------------------------------------------------

Predicate = Callable[[dict[str, Any]], bool]

STRING_FILTERS = {f: f for f in CONTACT_STRING_FIELDS}  # filterType == stored field name
DATE_FILTERS = {"created": "creationDate", "lastModified": "lastModified"}
INFO_FIELD_STATE_FIELDS = ("email", "extRef", "firstName", "lastName")
DATE_COMPARATORS = {
    "eq": operator.eq,
    "neq": operator.ne,
    "gt": operator.gt,
    "lt": operator.lt,
    "gte": operator.ge,
    "lte": operator.le,
}


def compile_search_filter(body: dict[str, Any]) -> Predicate:
    # Interpretation: the body is {"filter": ...} only; no filter is an error, not "match all".
    check_keys(body, required={"filter"}, what="search body")
    spec = body["filter"]
    if isinstance(spec, dict) and "conjunction" in spec:
        return compile_conjunction(spec)
    return compile_criterion(spec)


def compile_conjunction(spec: dict[str, Any]) -> Predicate:
    check_keys(spec, required={"conjunction", "filters"}, what="filter")
    if spec["conjunction"] != "and":
        raise ApiError(400, f"Unsupported conjunction {spec['conjunction']!r}; only 'and' is supported.")
    filters = spec["filters"]
    if not isinstance(filters, list) or not 2 <= len(filters) <= 5:
        raise ApiError(400, "A conjunction needs 'filters': a list of 2 to 5 criteria.")
    predicates = [compile_criterion(item) for item in filters]
    return lambda contact: all(p(contact) for p in predicates)


def compile_criterion(spec: Any) -> Predicate:
    if not isinstance(spec, dict):
        raise ApiError(400, "Each filter must be a JSON object.")
    filter_type = spec.get("filterType")
    if filter_type in STRING_FILTERS:
        return string_criterion(spec, STRING_FILTERS[filter_type])
    if filter_type in DATE_FILTERS:
        return date_criterion(spec, DATE_FILTERS[filter_type])
    if filter_type == "inList":
        return in_list_criterion(spec)
    if filter_type == "infoFieldState":
        return info_field_state_criterion(spec)
    raise ApiError(400, f"Unknown filterType {filter_type!r}.")


def check_keys(spec: dict[str, Any], required: set[str], what: str) -> None:
    for key in spec:
        if key not in required:
            raise ApiError(400, f"Unknown key '{key}' in {what}.")
    missing = sorted(required - spec.keys())
    if missing:
        raise ApiError(400, f"Missing '{missing[0]}' in {what}.")


def string_criterion(spec: dict[str, Any], field_name: str) -> Predicate:
    check_keys(spec, required={"filterType", "comparison", "value"}, what="filter")
    comparison, value = spec["comparison"], spec["value"]
    if comparison not in ("eq", "neq"):
        raise ApiError(400, f"Unsupported comparison {comparison!r} for filterType '{spec['filterType']}'.")
    if not isinstance(value, str):
        raise ApiError(400, f"Filter value for '{spec['filterType']}' must be a string.")
    wanted = normalized(value)
    if comparison == "eq":
        return lambda contact: normalized(contact[field_name]) == wanted
    return lambda contact: normalized(contact[field_name]) != wanted


def date_criterion(spec: dict[str, Any], field_name: str) -> Predicate:
    """Interpretation: values are UTC; a date-only value compares whole days."""
    check_keys(spec, required={"filterType", "comparison", "value"}, what="filter")
    compare = DATE_COMPARATORS.get(spec["comparison"])
    if compare is None:
        raise ApiError(400, f"Unsupported comparison {spec['comparison']!r} for a date filter.")
    value = spec["value"]
    target: date | datetime
    try:
        if isinstance(value, str) and DATE_ONLY_RE.fullmatch(value):
            target = datetime.strptime(value, "%Y-%m-%d").date()
        elif isinstance(value, str) and TRANSACTION_DATE_RE.fullmatch(value):
            target = datetime.strptime(value, TRANSACTION_DATE_FORMAT).replace(tzinfo=UTC)
        else:
            raise ValueError
    except ValueError:
        raise ApiError(400, "Date filter value must be 'yyyy-MM-dd' or 'yyyy-MM-dd hh:mm:ss'.") from None

    def at_granularity(ms: int) -> date | datetime:
        moment = datetime.fromtimestamp(ms // 1000, UTC)
        return moment.date() if not isinstance(target, datetime) else moment

    return lambda contact: compare(at_granularity(contact[field_name]), target)


def in_list_criterion(spec: dict[str, Any]) -> Predicate:
    # The sandbox never adds contacts to mailing lists, so membership is always empty.
    check_keys(spec, required={"filterType", "comparison", "mailingListId"}, what="filter")
    if not isinstance(spec["comparison"], bool) or not isinstance(spec["mailingListId"], str):
        raise ApiError(400, "inList needs a boolean 'comparison' and a string 'mailingListId'.")
    return lambda contact: spec["comparison"] is False


def info_field_state_criterion(spec: dict[str, Any]) -> Predicate:
    check_keys(spec, required={"filterType", "field", "comparison"}, what="filter")
    if spec["field"] not in INFO_FIELD_STATE_FIELDS or spec["comparison"] not in ("empty", "notEmpty"):
        raise ApiError(400, "infoFieldState needs field email|extRef|firstName|lastName and empty|notEmpty.")
    want_value = spec["comparison"] == "notEmpty"
    return lambda contact: bool(normalized(contact[spec["field"]])) == want_value


def parse_bool_param(query: dict[str, str], name: str) -> bool:
    raw = query.get(name, "false").lower()
    if raw not in ("true", "false"):
        raise ApiError(400, f"Parameter {name} must be true or false.")
    return raw == "true"


def parse_page_size(query: dict[str, str]) -> int:
    raw = query.get("pageSize", str(SEARCH_DEFAULT_PAGE_SIZE))
    if not raw.isdigit() or not 1 <= int(raw) <= SEARCH_MAX_PAGE_SIZE:
        raise ApiError(400, f"Parameter pageSize must be an integer from 1 to {SEARCH_MAX_PAGE_SIZE}.")
    return int(raw)


def encode_skip_token(offset: int) -> str:
    return base64.b64encode(str(offset).encode()).decode()  # the reference's example: "NQ==" == 5


def decode_skip_token(query: dict[str, str], limit: int | None = SEARCH_MAX_OFFSET) -> int:
    if "skipToken" not in query:
        return 0
    token = query["skipToken"]
    if not token:
        raise ApiError(400, "Parameter skipToken should not be empty.", "QVAL_5")
    try:
        offset = int(base64.b64decode(token, validate=True).decode())
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ApiError(400, "Parameter skipToken is invalid.") from None
    if offset < 0:
        raise ApiError(400, "Parameter skipToken is invalid.")
    if limit is not None and offset >= limit:
        raise ApiError(400, f"Cannot paginate beyond the first {limit} contacts; use an export.")
    return offset


# --------------------------------------------------------------------------------------------
# Transactions
# --------------------------------------------------------------------------------------------

TRANSACTION_KEYS = ("contactId", "mailingListId", "transactionDate", "data")


class TransactionRejected(Exception):
    """One entry of a transactions request is invalid; it goes to unprocessedTransactions."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def validate_transaction(directory: Directory, entry: Any) -> dict[str, Any]:
    """Return the transaction to store, or raise TransactionRejected. Error codes are placeholders."""
    if not isinstance(entry, dict):
        raise TransactionRejected("INVALID_TRANSACTION", "A transaction must be a JSON object.")
    for key in entry:
        if key not in TRANSACTION_KEYS:
            raise TransactionRejected("INVALID_TRANSACTION", f"Unknown field '{key}'.")
    contact_id = entry.get("contactId")
    mailing_list_id = entry.get("mailingListId")
    if not isinstance(contact_id, str) or not contact_id:
        raise TransactionRejected("MISSING_CONTACT_ID", "Field 'contactId' is required and must be a string.")
    if not isinstance(mailing_list_id, str) or not mailing_list_id:
        raise TransactionRejected(
            "MISSING_MAILING_LIST_ID", "Field 'mailingListId' is required and must be a string."
        )
    if contact_id not in directory.contacts:
        raise TransactionRejected("CONTACT_NOT_FOUND", f"Contact {contact_id} is not in this directory.")
    if mailing_list_id not in directory.mailing_lists:
        raise TransactionRejected(
            "MAILING_LIST_NOT_FOUND", f"Mailing list {mailing_list_id} is not in this directory."
        )
    return {
        "contactId": contact_id,
        "mailingListId": mailing_list_id,
        "transactionDate": validate_transaction_date(entry),
        "data": validate_transaction_data(entry),
    }


def validate_transaction_date(entry: dict[str, Any]) -> str:
    # Interpretation: only contactId/mailingListId are required; a missing date means "now".
    if "transactionDate" not in entry:
        return datetime.now(UTC).strftime(TRANSACTION_DATE_FORMAT)
    value = entry["transactionDate"]
    message = "Field 'transactionDate' must be 'YYYY-MM-DD HH:MM:SS' (24-hour UTC)."
    # fullmatch first: strptime alone would accept "2021-2-1 0:0:0".
    if not isinstance(value, str) or not TRANSACTION_DATE_RE.fullmatch(value):
        raise TransactionRejected("INVALID_TRANSACTION_DATE", message)
    try:
        datetime.strptime(value, TRANSACTION_DATE_FORMAT)
    except ValueError:
        raise TransactionRejected("INVALID_TRANSACTION_DATE", message) from None
    return value


def validate_transaction_data(entry: dict[str, Any]) -> dict[str, Any]:
    data = entry.get("data", {})
    if not isinstance(data, dict):
        raise TransactionRejected("INVALID_TRANSACTION_DATA", "Field 'data' must be a JSON object.")
    for key, value in data.items():
        if not is_scalar(value):
            raise TransactionRejected(
                "INVALID_TRANSACTION_DATA",
                f"Field 'data.{key}' must be a string, number or boolean, not {_json_type(value)}.",
            )
    return dict(data)


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------

FAULT_KEYS = (
    "method",
    "pathPattern",
    "status",
    "times",
    "retryAfter",
    "delaySeconds",
    "when",
    "body",
    "location",
    "failImport",
    "failImportAtPercent",
)


@dataclass
class Fault:
    path_pattern: re.Pattern[str]
    status: int  # 0: do not change the answer (use with delay_seconds for a slow success)
    remaining: int
    method: str | None = None
    retry_after: float | None = None
    delay_seconds: float = 0
    when: str = "before"
    body: dict[str, Any] | None = None
    location: str | None = None
    fail_import: str | None = None  # an import this fault hits is accepted, then fails as a whole...
    fail_import_at_percent: float = 0  # ...once this share of its contacts is processed

    def matches(self, req: Request) -> bool:
        method_ok = self.method is None or self.method == req.method
        return method_ok and self.path_pattern.search(req.path) is not None

    def response(self) -> Response:
        headers = {}
        if self.retry_after is not None:
            headers["Retry-After"] = stringify(self.retry_after)
        if self.location is not None:
            headers["Location"] = self.location
        if self.body is not None:
            return Response(self.status, copy.deepcopy(self.body), headers)
        if self.status < 400:
            return Response(self.status, {"meta": make_meta(self.status)}, headers)
        phrase = status_text(self.status).split(" - ", 1)[1]
        code = ERROR_CODES.get(self.status, f"HTTP_{self.status}")
        return Response(self.status, error_envelope(self.status, phrase, code), headers)

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "pathPattern": self.path_pattern.pattern,
            "status": self.status,
            "times": self.remaining,
            "retryAfter": self.retry_after,
            "delaySeconds": self.delay_seconds,
            "when": self.when,
            "body": self.body,
            "location": self.location,
            "failImport": self.fail_import,
            "failImportAtPercent": self.fail_import_at_percent,
        }


def parse_fault(spec: dict[str, Any]) -> Fault:
    for key in spec:
        if key not in FAULT_KEYS:
            raise ApiError(400, f"Unknown fault field '{key}'.")
    pattern = spec.get("pathPattern")
    if not isinstance(pattern, str):
        raise ApiError(400, "'pathPattern' (a regex string) is required.")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ApiError(400, f"'pathPattern' is not a valid regex: {exc}") from None
    status = spec.get("status")
    if not isinstance(status, int) or isinstance(status, bool) or not (status == 0 or 100 <= status <= 599):
        raise ApiError(400, "'status' must be 0 or an HTTP status code (100-599).")
    times = spec.get("times", 1)
    if not isinstance(times, int) or isinstance(times, bool) or times < 1:
        raise ApiError(400, "'times' must be a positive integer.")
    method = spec.get("method")
    if method is not None and not isinstance(method, str):
        raise ApiError(400, "'method' must be a string.")
    when = spec.get("when", "before")
    if when not in ("before", "after"):
        raise ApiError(400, "'when' must be 'before' or 'after'.")
    body = spec.get("body")
    if body is not None and not isinstance(body, dict):
        raise ApiError(400, "'body' must be a JSON object.")
    location = spec.get("location")
    if location is not None and (not isinstance(location, str) or not location.isprintable()):
        raise ApiError(400, "'location' must be a string without control characters.")
    fail_import = spec.get("failImport")
    if fail_import is not None and (not isinstance(fail_import, str) or not fail_import or len(fail_import) > 1000):
        raise ApiError(400, "'failImport' must be the failure message: a non-empty string (at most 1000 characters).")
    fail_at = _non_negative(spec, "failImportAtPercent", 0)
    if fail_at > 100:
        raise ApiError(400, "'failImportAtPercent' must be from 0 to 100.")
    return Fault(
        path_pattern=compiled,
        status=status,
        remaining=times,
        method=method.upper() if method else None,
        retry_after=_non_negative(spec, "retryAfter", None),
        delay_seconds=_non_negative(spec, "delaySeconds", 0),
        when=when,
        body=body,
        location=location,
        fail_import=fail_import,
        fail_import_at_percent=fail_at,
    )


def _non_negative(spec: dict[str, Any], key: str, default: float | None) -> Any:
    value = spec.get(key, default)
    if value is not None and (not is_number(value) or value < 0):
        raise ApiError(400, f"'{key}' must be a non-negative number.")
    return value


# --------------------------------------------------------------------------------------------
# The sandbox
# --------------------------------------------------------------------------------------------


class QualtricsSandbox:
    """In-memory Qualtrics v3 stand-in served over HTTP. One lock guards all state."""

    log_requests = False  # the CLI turns on the one-line-per-request access log

    def __init__(
        self,
        api_token: str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        limits: dict[str, Any] | None = None,
        latency: dict[str, Any] | None = None,
        imports: dict[str, Any] | None = None,
    ) -> None:
        """`limits`, `latency` and `imports` are the start configuration (the JSON the admin endpoints take);
        reset() comes back to it. A bad value raises ValueError."""
        self._api_token = api_token
        self._host = host
        self._port = port
        self._lock = threading.RLock()
        self._server: _SandboxServer | None = None
        self._thread: threading.Thread | None = None
        self._start_limits = parse_limits(limits or {})
        self._start_latency = parse_latency(latency or {})
        self._start_imports = parse_import_config(imports or {})
        self._limiter = RateLimiter(self._start_limits)
        self._latency = Latency(self._start_latency)
        self._stats = Stats()
        self.reset()

    @classmethod
    def options_from_environment(cls, environ: Any = None) -> dict[str, Any]:
        """Constructor options from SANDBOX_LIMITS, SANDBOX_LATENCY and SANDBOX_IMPORTS (JSON objects)."""
        environ = os.environ if environ is None else environ
        options = {}
        names = (
            ("SANDBOX_LIMITS", "limits", parse_limits),
            ("SANDBOX_LATENCY", "latency", parse_latency),
            ("SANDBOX_IMPORTS", "imports", parse_import_config),
        )
        for name, option, parse in names:
            raw = environ.get(name, "").strip()
            if raw:
                try:
                    options[option] = json.loads(raw)
                except ValueError as exc:
                    raise ValueError(f"{name} is not valid JSON: {exc}") from None
                try:
                    parse(options[option])  # checked here so the message names the variable
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}") from None
        return options

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> QualtricsSandbox:
        if self._server is not None:
            return self
        self._server = _SandboxServer((self._host, self._port), _SandboxHandler, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="qualtrics-sandbox", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("QualtricsSandbox is not started; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def reset(self) -> None:
        with self._lock:
            self._directories: dict[str, Directory] = {SEED_DIRECTORY_ID: seed_directory()}
            self._requests: list[dict[str, Any]] = []
            self._faults: list[Fault] = []
            self._workflow_runs: list[dict[str, Any]] = []
            # Limits, latency and import settings go back to the start configuration; counts to zero.
            self._limiter.configure(self._start_limits)
            self._latency.configure(self._start_latency)
            self._stats.reset()
            self._imports = ImportJobs(self._start_imports)

    def __enter__(self) -> QualtricsSandbox:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---- entry point used by the HTTP handler ------------------------------------------------

    def handle(self, req: Request) -> Response:
        if req.path == ADMIN_PREFIX or req.path.startswith(ADMIN_PREFIX + "/"):
            return self._handle_admin(req)
        return self._handle_api(req)

    def _handle_api(self, req: Request) -> Response:
        entry = self._log_request(req)
        klass = endpoint_class(req.method, req.path)
        fault = self._take_fault(req)
        refused_by = None
        if fault and fault.status and fault.when == "before":
            response = fault.response()  # the request never reaches "Qualtrics"
        else:
            if fault and fault.fail_import is not None:
                req.import_failure = (fault.fail_import, fault.fail_import_at_percent)
            response, refused_by = self._dispatch_api(req, klass)
            if fault and fault.status:
                response = fault.response()  # applied, but the client sees a failure
        with self._lock:
            entry["status"] = response.status
        self._stats.record(klass, response.status, refused_by)
        delay = (fault.delay_seconds if fault else 0) + self._latency.delay(klass)
        if delay:
            time.sleep(delay)  # outside the lock: other requests keep flowing
        return response

    def _dispatch_api(self, req: Request, klass: str) -> tuple[Response, str | None]:
        """The answer, and the budget that refused the call (None if it was not rate limited)."""
        try:
            if not req.path.startswith(API_PREFIXES):
                raise ApiError(404, NOT_FOUND_MESSAGE)
            self._check_token(req)
            found, params = find_route(self._API_ROUTES, req)
            refusal = self._limiter.acquire(klass)
            if refusal is not None:
                return self._rate_limited(*refusal), refusal[0]
            check_body_headers(req, found)
            with self._lock:
                self._advance_imports()
                response = found.handler(self, req, **params)
                # Copy while locked: the body is serialized after the lock is released.
                return replace(response, body=copy.deepcopy(response.body)), None
        except ApiError as exc:
            return Response(exc.status, error_envelope(exc.status, exc.message, exc.code), dict(exc.headers)), None
        except Exception:  # a sandbox bug must still produce an answer (and a traceback)
            traceback.print_exc()
            return Response(500, error_envelope(500, "Internal sandbox error.", ERROR_CODES[500])), None

    def _rate_limited(self, budget: str, wait: float) -> Response:
        retry_after = self._limiter.retry_after_header(wait)
        what = "brand-wide" if budget == "brand" else budget
        message = (
            f"Too many requests: the {what} limit ({self._limiter.describe(budget)}) is used up; "
            f"retry after {retry_after} s."
        )
        return Response(429, error_envelope(429, message, ERROR_CODES[429]), {"Retry-After": retry_after})

    def _check_token(self, req: Request) -> None:
        token = req.header("X-API-TOKEN")
        # Interpretation (per brief): missing header -> 401. Real Qualtrics has been seen to
        # answer 400 ATP_2 for a missing header; we keep its code and message.
        if not token:
            raise ApiError(401, "Expected authorization in headers, but none provided.", "ATP_2")
        if not hmac.compare_digest(token.encode(), self._api_token.encode()):
            raise ApiError(401, "Unrecognized X-API-TOKEN.", "DCD_7")

    def _log_request(self, req: Request) -> dict[str, Any]:
        try:
            body = parse_json(req.raw_body) if req.raw_body else None
        except ValueError:
            body = None
        entry = {
            "method": req.method,
            "path": req.path,
            "query": dict(req.query),
            "status": None,
            "body": body,
            "headers": {
                k: ("***" if k.lower() in ("x-api-token", "authorization") else v)
                for k, v in req.headers.items()
            },
            "time": time.time(),
        }
        with self._lock:
            self._requests.append(entry)  # arrival order, even if answered later
        return entry

    def _take_fault(self, req: Request) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(req):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _directory(self, directory_id: str) -> Directory:
        directory = self._directories.get(directory_id)
        if directory is None:
            raise ApiError(404, f"Directory {directory_id} not found.")
        return directory

    def _contact(self, directory: Directory, contact_id: str) -> dict[str, Any]:
        contact = directory.contacts.get(contact_id)
        if contact is None:
            raise ApiError(404, f"Contact {contact_id} not found in directory {directory.directory_id}.")
        return contact

    # ---- Qualtrics API handlers (called with the lock held) ---------------------------------

    def _whoami(self, req: Request) -> Response:
        return ok(dict(WHOAMI))

    def _list_directories(self, req: Request) -> Response:
        elements = [d.summary() for d in self._directories.values()]
        return ok({"elements": elements, "nextPage": None})

    def _create_contact(self, req: Request, directory_id: str) -> Response:
        directory = self._directory(directory_id)
        fields = validate_contact(req.json_object())
        now = now_ms()
        contact, _ = directory.upsert(fields, now)
        return ok({"id": contact["contactId"]})

    def _get_contact(self, req: Request, directory_id: str, contact_id: str) -> Response:
        directory = self._directory(directory_id)
        return ok(contact_get_shape(self._contact(directory, contact_id)))

    def _delete_contact(self, req: Request, directory_id: str, contact_id: str) -> Response:
        directory = self._directory(directory_id)
        self._contact(directory, contact_id)
        directory.remove_contact(contact_id)
        return ok()  # meta only, as for an update

    def _search_contacts(self, req: Request, directory_id: str) -> Response:
        directory = self._directory(directory_id)
        page_size = parse_page_size(req.query)
        offset = decode_skip_token(req.query)
        embedded = parse_bool_param(req.query, "includeEmbedded")
        segments = parse_bool_param(req.query, "includeSegments")
        matches = compile_search_filter(req.json_object())
        found = [c for c in directory.contacts.values() if matches(c)]
        page = found[offset : offset + page_size]
        result: dict[str, Any] = {"elements": [contact_search_shape(c, embedded, segments) for c in page]}
        if offset + page_size < len(found):
            result["skipToken"] = encode_skip_token(offset + page_size)
        return ok(result)

    def _create_transactions(self, req: Request, directory_id: str) -> Response:
        directory = self._directory(directory_id)
        body = req.json_object()
        if not body:
            raise ApiError(400, "Request body must contain at least one transaction.")
        created: dict[str, Any] = {}
        unprocessed: dict[str, Any] = {}
        for key, entry in body.items():
            try:
                transaction = validate_transaction(directory, entry)
            except TransactionRejected as exc:
                unprocessed[key] = {"error": exc.code, "errorMessage": exc.message}
                continue
            transaction = {"transactionId": new_id("CTR_"), **transaction}
            directory.transactions.append(transaction)
            created[key] = {"id": transaction["transactionId"]}
        return ok({"createdTransactions": created, "unprocessedTransactions": unprocessed})

    def _create_transaction_batch(self, req: Request, directory_id: str) -> Response:
        # Interpretation: an import's transactionMeta.batchId is not checked against these (Qualtrics does not
        # refuse an unknown one up front either); the backfill creates one per directory, as the API wants.
        directory = self._directory(directory_id)
        body = req.json_object()
        ids = body.get("transactionIds", [])
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ApiError(400, "Field 'transactionIds' must be a list of transaction ids.")
        creation = body.get("creationDate")
        if creation is not None and not isinstance(creation, str):
            raise ApiError(400, "Field 'creationDate' must be a date-time string.")
        batch_id = new_id("BT_")
        directory.batches[batch_id] = {"batchId": batch_id, "creationDate": creation, "transactionIds": list(ids)}
        return ok({"id": batch_id})

    def _list_contact_transactions(self, req: Request, directory_id: str, contact_id: str) -> Response:
        # Pages as the reference's list endpoints do: pageSize (default 100) and skipToken in, the next
        # page's whole URL in result.nextPage (null on the last page).
        directory = self._directory(directory_id)
        self._contact(directory, contact_id)
        page_size = parse_page_size(req.query)
        offset = decode_skip_token(req.query, limit=None)
        elements = [t for t in directory.transactions if t["contactId"] == contact_id]
        next_page = None
        if offset + page_size < len(elements):
            host = req.header("Host") or "127.0.0.1"
            query = urlencode({"pageSize": page_size, "skipToken": encode_skip_token(offset + page_size)})
            next_page = f"http://{host}{req.path}?{query}"
        return ok({"elements": elements[offset : offset + page_size], "nextPage": next_page})

    # ---- transaction-contacts imports (bulk) ------------------------------------------------

    def _advance_imports(self) -> None:
        """Bring every import job up to now (lock held)."""

        def apply(job: ImportJob, index: int, fields: dict[str, Any], data: dict[str, Any] | None) -> str | None:
            directory = self._directories.get(job.directory_id)
            # Qualtrics documents that an unknown directory, list or batch id is not refused up front; such an
            # import completes with all-zero counts.
            if directory is None or job.mailing_list_id not in directory.mailing_lists:
                return None
            contact, created = directory.upsert(fields, now_ms())  # the same dedup as create-contact
            outcome = "added" if created else "updated"
            if data is not None and job.meta is not None:
                directory.transactions.append(
                    {
                        "transactionId": new_id("CTR_"),
                        "contactId": contact["contactId"],
                        "mailingListId": job.mailing_list_id,
                        # Interpretation: Qualtrics documents no date for imported transactions: the
                        # processing time, like a create-transactions call without transactionDate.
                        "transactionDate": datetime.now(UTC).strftime(TRANSACTION_DATE_FORMAT),
                        "data": dict(data),
                        "batchId": job.meta["batchId"],
                    }
                )
                job.transactions_created += 1
            return outcome

        self._imports.advance(time.monotonic(), apply)

    def _create_import(self, req: Request, directory_id: str, mailing_list_id: str) -> Response:
        try:
            contacts, meta = parse_import_body(req.json_object())
            job = ImportJob(new_import_id(), directory_id, mailing_list_id, contacts, meta, created=time.monotonic())
            if req.import_failure is not None:
                message, at_percent = req.import_failure
                job.fail_message, job.fail_at = message, math.floor(len(contacts) * at_percent / 100)
            self._imports.submit(job, time.monotonic())
        except ImportRefused as exc:
            headers = {}
            if exc.retry_after is not None:
                headers["Retry-After"] = self._limiter.retry_after_header(exc.retry_after)
            raise ApiError(exc.status, exc.message, headers=headers) from None
        host = req.header("Host") or "127.0.0.1"
        tracking = f"http://{host}{req.path.rstrip('/')}/{job.import_id}"
        return ok({"id": job.import_id, "status": job.status, "percentComplete": 0, "tracking": {"url": tracking}})

    def _import_job(self, directory_id: str, mailing_list_id: str, import_id: str) -> ImportJob:
        job = self._imports.jobs.get(import_id)
        if job is None or (job.directory_id, job.mailing_list_id) != (directory_id, mailing_list_id):
            raise ApiError(404, f"Import {import_id} not found.")
        return job

    def _get_import(self, req: Request, directory_id: str, mailing_list_id: str, import_id: str) -> Response:
        return ok(self._import_job(directory_id, mailing_list_id, import_id).status_result())

    def _get_import_summary(self, req: Request, directory_id: str, mailing_list_id: str, import_id: str) -> Response:
        return ok(self._import_job(directory_id, mailing_list_id, import_id).summary_result())

    def _trigger_workflow(self, req: Request) -> Response:
        url_token_id = req.query.get("urlTokenId")
        if not url_token_id:
            raise ApiError(400, "Missing required query parameter urlTokenId.")
        body = req.json_object()
        run = {
            "urlTokenId": url_token_id,
            "path": req.path,
            "query": dict(req.query),
            "body": body,
            "time": time.time(),
        }
        self._workflow_runs.append(run)
        return ok()  # meta only: the reference knows of no result for this call

    # ---- admin handlers (called with the lock held) -----------------------------------------

    def _handle_admin(self, req: Request) -> Response:
        try:
            found, params = find_route(self._ADMIN_ROUTES, req)
            with self._lock:
                response = found.handler(self, req, **params)
                return replace(response, body=copy.deepcopy(response.body))
        except ApiError as exc:
            return Response(exc.status, {"error": exc.message})
        except Exception:  # a sandbox bug must still produce an answer (and a traceback)
            traceback.print_exc()
            return Response(500, {"error": "Internal sandbox error."})

    def _admin_state(self, req: Request) -> Response:
        self._advance_imports()
        directories = {d_id: d.state() for d_id, d in self._directories.items()}
        return Response(200, {"directories": directories, "workflowRuns": self._workflow_runs})

    def _admin_requests(self, req: Request) -> Response:
        return Response(200, {"requests": self._requests})

    def _admin_reset(self, req: Request) -> Response:
        self.reset()
        return Response(200, {"reset": True})

    def _admin_put_directory(self, req: Request) -> Response:
        directory = parse_directory_spec(req.json_object())
        directory.is_default = directory.directory_id == SEED_DIRECTORY_ID
        self._directories[directory.directory_id] = directory
        return Response(200, {"directoryId": directory.directory_id, **directory.state()})

    def _admin_add_contact(self, req: Request) -> Response:
        """Seed a contact with a chosen id (samples and tests that name a known contactId)."""
        spec = req.json_object()
        directory = self._directory(str(spec.pop("directoryId", SEED_DIRECTORY_ID)))
        contact_id = spec.pop("contactId", None)
        if not isinstance(contact_id, str) or not contact_id.startswith("CID_"):
            raise ApiError(400, "'contactId' is required and starts with CID_.")
        fields = validate_contact(spec)
        now = now_ms()
        contact = new_contact(now)
        contact["contactId"] = contact_id
        apply_contact_fields(contact, fields, now)
        directory.put_contact(contact)
        return Response(200, contact_get_shape(contact))

    def _admin_add_fault(self, req: Request) -> Response:
        self._faults.append(parse_fault(req.json_object()))
        return Response(200, {"faults": [f.to_json() for f in self._faults]})

    def _admin_list_faults(self, req: Request) -> Response:
        return Response(200, {"faults": [f.to_json() for f in self._faults]})

    def _admin_clear_faults(self, req: Request) -> Response:
        self._faults.clear()
        return Response(200, {"faults": []})

    def _admin_get_limits(self, req: Request) -> Response:
        return Response(200, {"limits": self._limiter.config()})

    def _admin_set_limits(self, req: Request) -> Response:
        """Replaces every budget (an unlisted class is unlimited) and starts the windows afresh."""
        self._limiter.configure(_admin_parse(parse_limits, req.json_object()))
        return self._admin_get_limits(req)

    def _admin_clear_limits(self, req: Request) -> Response:
        self._limiter.configure(parse_limits({}))
        return self._admin_get_limits(req)

    def _admin_get_latency(self, req: Request) -> Response:
        return Response(200, {"latency": self._latency.config()})

    def _admin_set_latency(self, req: Request) -> Response:
        self._latency.configure(_admin_parse(parse_latency, req.json_object()))
        return self._admin_get_latency(req)

    def _admin_clear_latency(self, req: Request) -> Response:
        self._latency.configure(parse_latency({}))
        return self._admin_get_latency(req)

    def _admin_stats(self, req: Request) -> Response:
        return Response(200, self._stats.snapshot())

    def _admin_get_imports(self, req: Request) -> Response:
        self._advance_imports()
        jobs = [
            {**job.summary_result(), "directoryId": job.directory_id, "mailingListId": job.mailing_list_id}
            for job in self._imports.jobs.values()
        ]
        return Response(200, {"config": dict(self._imports.config), "jobs": jobs})

    def _admin_set_imports(self, req: Request) -> Response:
        """Merges into the current settings; running jobs continue at the new speed from now on."""
        self._advance_imports()
        self._imports.config = _admin_parse(parse_import_config, req.json_object(), self._imports.config)
        return self._admin_get_imports(req)

    _DIRECTORY = r"/API/v3/directories/(?P<directory_id>[^/]+)"
    _CONTACT = _DIRECTORY + r"/contacts/(?P<contact_id>[^/]+)"
    _IMPORTS = _DIRECTORY + r"/mailinglists/(?P<mailing_list_id>[^/]+)/transactioncontacts"
    _API_ROUTES = (
        route("GET", r"/API/v3/whoami", _whoami),
        route("GET", r"/API/v3/directories/?", _list_directories),
        route("POST", _DIRECTORY + r"/contacts", _create_contact),
        route("POST", _DIRECTORY + r"/contacts/search", _search_contacts),
        route("GET", _CONTACT, _get_contact),
        route("DELETE", _CONTACT, _delete_contact),
        route("GET", _CONTACT + r"/transactions", _list_contact_transactions),
        route("POST", _DIRECTORY + r"/transactions", _create_transactions),
        route("POST", _DIRECTORY + r"/transactionbatches", _create_transaction_batch),
        route("POST", _IMPORTS + r"/?", _create_import, max_body=IMPORT_MAX_BODY),
        route("GET", _IMPORTS + r"/(?P<import_id>[^/]+)", _get_import),
        route("GET", _IMPORTS + r"/(?P<import_id>[^/]+)/summary", _get_import_summary),
        route(
            "POST",
            r"/inbound-event/v1/events/(?:json|JSON)/triggers",
            _trigger_workflow,
            max_body=WORKFLOW_MAX_BODY,
        ),
    )
    _ADMIN_ROUTES = (
        route("GET", r"/_sandbox/state", _admin_state),
        route("GET", r"/_sandbox/requests", _admin_requests),
        route("POST", r"/_sandbox/reset", _admin_reset),
        route("POST", r"/_sandbox/directories", _admin_put_directory),
        route("POST", r"/_sandbox/contacts", _admin_add_contact),
        route("GET", r"/_sandbox/faults", _admin_list_faults),
        route("POST", r"/_sandbox/faults", _admin_add_fault),
        route("DELETE", r"/_sandbox/faults", _admin_clear_faults),
        route("GET", r"/_sandbox/limits", _admin_get_limits),
        route("POST", r"/_sandbox/limits", _admin_set_limits),
        route("DELETE", r"/_sandbox/limits", _admin_clear_limits),
        route("GET", r"/_sandbox/latency", _admin_get_latency),
        route("POST", r"/_sandbox/latency", _admin_set_latency),
        route("DELETE", r"/_sandbox/latency", _admin_clear_latency),
        route("GET", r"/_sandbox/stats", _admin_stats),
        route("GET", r"/_sandbox/imports", _admin_get_imports),
        route("POST", r"/_sandbox/imports", _admin_set_imports),
    )


def _admin_parse(parse: Callable[..., dict[str, Any]], spec: Any, *args: Any) -> dict[str, Any]:
    try:
        return parse(spec, *args)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def check_body_headers(req: Request, found: Route) -> None:
    """Size and media-type checks that apply before the body is read as JSON."""
    if found.max_body is not None and len(req.raw_body) > found.max_body:
        raise ApiError(413, f"Request body exceeds the {found.max_body // 1024} KB limit.")
    if req.raw_body:
        media_type = (req.header("Content-Type") or "").split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            raise ApiError(415, "Content-Type must be application/json.")


def parse_directory_spec(spec: dict[str, Any]) -> Directory:
    for key in spec:
        if key not in ("directoryId", "name", "deduplicationCriteria", "mailingLists"):
            raise ApiError(400, f"Unknown directory field '{key}'.")
    directory_id = spec.get("directoryId")
    if not isinstance(directory_id, str) or not directory_id:
        raise ApiError(400, "'directoryId' is required.")
    name = spec.get("name", directory_id)
    criteria = spec.get("deduplicationCriteria", {})
    mailing_lists = spec.get("mailingLists", [])
    if not isinstance(name, str):
        raise ApiError(400, "'name' must be a string.")
    if not isinstance(criteria, dict) or any(
        k not in DEDUP_FIELDS or not isinstance(v, bool) for k, v in criteria.items()
    ):
        raise ApiError(400, f"'deduplicationCriteria' maps {sorted(DEDUP_FIELDS)} to booleans.")
    if not isinstance(mailing_lists, list) or not all(isinstance(m, str) and m for m in mailing_lists):
        raise ApiError(400, "'mailingLists' must be a list of mailing list ids.")
    # Unlisted criteria are off: a directory created here without criteria does not deduplicate.
    deduplication = {name: bool(criteria.get(name, False)) for name in DEDUP_FIELDS}
    return Directory(directory_id, name, deduplication, list(mailing_lists))


# --------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------


class _SandboxServer(ThreadingHTTPServer):
    daemon_threads = True
    # The default listen backlog (5) drops SYNs under concurrent load: 1 s retransmit stalls.
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], sandbox: QualtricsSandbox
    ) -> None:
        self.sandbox = sandbox
        super().__init__(address, handler)


class _SandboxHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real API behind a load balancer
    # Headers and body go out in separate writes; with Nagle on, keep-alive clients stall ~40 ms
    # per request on delayed ACKs, which would distort benchmarks.
    disable_nagle_algorithm = True
    server: _SandboxServer

    def _handle(self) -> None:
        if self._too_large():
            return
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        req = Request(self.command, url.path, query, dict(self.headers.items()), self._read_body())
        self._write(self.server.sandbox.handle(req))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def _too_large(self) -> bool:
        """Refuse a declared body above MAX_REQUEST_BYTES unread: reading it would only fill memory."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if 0 <= length <= MAX_REQUEST_BYTES:
            return False
        self.close_connection = True
        status = 413 if length > 0 else 400
        message = f"Request body exceeds {MAX_REQUEST_BYTES} bytes." if status == 413 else "Invalid Content-Length."
        self._write(Response(status, error_envelope(status, message, ERROR_CODES[status])))
        return True

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        chunks = []
        while True:
            size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()  # CRLF after each chunk

    def _write(self, response: Response) -> None:
        payload = json.dumps(response.body).encode() if response.body is not None else b""
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (e.g. its read timeout fired)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.sandbox.log_requests:
            super().log_message(format, *args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local Qualtrics v3 API sandbox.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--token", required=True, help="value clients must send in X-API-TOKEN")
    parser.add_argument("--quiet", action="store_true", help="no per-request access log")
    args = parser.parse_args(argv)

    # SIGTERM (e.g. from `make run` or a process manager) stops as cleanly as Ctrl-C.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        sandbox = QualtricsSandbox(args.token, args.host, args.port, **QualtricsSandbox.options_from_environment())
    except ValueError as exc:
        parser.error(str(exc))
    sandbox.log_requests = not args.quiet
    sandbox.start()
    print(
        f"Qualtrics sandbox listening on {sandbox.base_url} (admin: {sandbox.base_url}/_sandbox/state)",
        flush=True,
    )
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        print("Stopping Qualtrics sandbox", file=sys.stderr)
    finally:
        sandbox.stop()


if __name__ == "__main__":
    main()
