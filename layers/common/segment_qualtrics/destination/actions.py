"""The Qualtrics actions: their fields, default mappings, payload models, and the registry ``ACTIONS``.

One ``ActionDefinition`` per action is the only list of actions: the queue's environment variable, the
template's logical-id prefix, the metric dimension and the executor are derived from (or named by) it.

Field names, defaults and rules follow Segment's Qualtrics (Actions) destination (docs/actions/
lists them). Building a payload applies Segment's rules in order: resolve the mapping against the event, drop
root keys that are missing, "" or null, coerce scalars, check required fields and formats.
"""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from segment_qualtrics.destination.errors import PermanentError
from segment_qualtrics.segment.mapping_kit import UNDEFINED, MappingError, resolve_mapping


@dataclass(frozen=True, slots=True)
class Field:
    type: str                 # "string" | "boolean" | "object" | "datetime" | "uri"
    required: bool = False
    default: Any = UNDEFINED  # the default mapping (a directive or a literal); UNDEFINED = none
    description: str = ""


def _path(path: str) -> dict[str, str]:
    return {"@path": path}


def _either(first: str, then_else: Any) -> dict[str, Any]:
    return {"@if": {"exists": _path(first), "then": _path(first), "else": then_else}}


_EMAIL = _either("$.email", _path("$.traits.email"))
_LANGUAGE = _either("$.traits.language", "EN")

CONTACT_FIELDS: dict[str, Field] = {
    "directoryId": Field("string", required=True, description="Directory id, also known as the pool id (POOL_...)."),
    "extRef": Field("string", default=_path("$.userId"), description="External data reference: the user's unique id."),
    "email": Field("string", default=_EMAIL, description="Email of the contact."),
    "phone": Field("string", default=_path("$.traits.phone"), description="Phone number of the contact."),
    "firstName": Field("string", default=_path("$.traits.firstName"), description="First name of the contact."),
    "lastName": Field("string", default=_path("$.traits.lastName"), description="Last name of the contact."),
    "language": Field("string", default=_LANGUAGE, description="Language code of the contact."),
    "unsubscribed": Field("boolean", default=False, description="Whether the contact is unsubscribed."),
    "embeddedData": Field("object", description="Contact embedded data (flat key-value)."),
}

TRANSACTION_FIELDS: dict[str, Field] = {
    "directoryId": CONTACT_FIELDS["directoryId"],
    "mailingListId": Field(
        "string", required=True, default=_path("$.traits.qualtricsMailingListId"),
        description="Mailing list the contact belongs to (CG_...).",
    ),
    "contactId": Field(
        "string", default=_path("$.traits.qualtricsContactId"),
        description="Contact to add the transaction to; when absent the contact is looked up by extRef, phone, email.",
    ),
    "extRef": Field(
        "string", required=True, default=_either("$.userId", _path("$.anonymousId")),
        description="External data reference, used to look up or create the contact.",
    ),
    **{k: CONTACT_FIELDS[k]
       for k in ("email", "phone", "firstName", "lastName", "language", "unsubscribed", "embeddedData")},
    "transactionDate": Field("datetime", default=_path("$.timestamp"), description="When the transaction happened."),
    "transactionData": Field("object", description="Properties of the transaction, sent as its data."),
}

DELETE_CONTACT_FIELDS: dict[str, Field] = {
    "directoryId": CONTACT_FIELDS["directoryId"],
    "contactId": Field(
        "string",
        description="The contact to delete (CID_...); when set, the other identifiers are not used.",
    ),
    "extRef": Field(
        "string", default=_path("$.userId"),
        description="Delete the contacts with this external data reference (with email and phone when set: all must "
                    "match).",
    ),
    "email": Field("string", description="Delete the contacts with this email (with the other identifiers set)."),
    "phone": Field("string", description="Delete the contacts with this phone (with the other identifiers set)."),
}

WORKFLOW_FIELDS: dict[str, Field] = {
    "workflowUrl": Field("uri", required=True, description="The URL of the workflow's JSON event trigger (https)."),
    "eventPayload": Field(
        "object",
        default={
            "event": _path("$.event"),
            "type": _path("$.type"),
            "userId": _path("$.userId"),
            "properties": _path("$.properties"),
            "traits": _path("$.traits"),
            "context": _path("$.context"),
        },
        description="The JSON body sent to the workflow trigger.",
    ),
}


# --- payload models -------------------------------------------------------------------------------

class _Payload(BaseModel):
    # Like Segment's Ajv (coerceTypes): numbers become strings, "true" becomes True; extra keys dropped.
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True, frozen=True)


def flat_value(value: Any) -> str | int | float | bool:
    """A value Qualtrics stores in embedded or transaction data: scalars kept, anything else as JSON text.

    Segment stringifies the *whole* object when one value is nested (its bug); we stringify that value.
    """
    if isinstance(value, str | int | float | bool):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _flat_object(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    return {k: flat_value(v) for k, v in value.items() if v is not None}


class ContactPayload(_Payload):
    directoryId: str
    extRef: str | None = None
    email: str | None = None
    phone: str | None = None
    firstName: str | None = None
    lastName: str | None = None
    language: str | None = None
    unsubscribed: bool | None = None
    embeddedData: dict[str, Any] | None = None

    @field_validator("embeddedData")
    @classmethod
    def _flatten(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return _flat_object(value)

    def contact_body(self) -> dict[str, Any]:
        """The create-contact body, keys in Segment's order, absent values omitted."""
        keys = ("firstName", "lastName", "phone", "email", "extRef", "unsubscribed", "language", "embeddedData")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


class TransactionPayload(ContactPayload):
    mailingListId: str
    extRef: str
    contactId: str | None = None
    transactionDate: str | None = None   # normalised to "YYYY-MM-DD HH:MM:SS" UTC
    transactionData: dict[str, Any] | None = None

    @field_validator("transactionData")
    @classmethod
    def _flatten_data(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return _flat_object(value)

    @field_validator("transactionDate", mode="before")
    @classmethod
    def _date(cls, value: Any) -> str | None:
        return None if value is None else qualtrics_datetime(value)

    def lookup_identifiers(self) -> dict[str, str]:
        """extRef, phone, email in Segment's filter order, those present only."""
        return lookup_identifiers(self)


def lookup_identifiers(payload: Any) -> dict[str, str]:
    """The contact search's identifiers (extRef, phone, email: Segment's filter order), those present only."""
    return {k: getattr(payload, k) for k in ("extRef", "phone", "email") if getattr(payload, k)}


# Qualtrics ids: a prefix, then letters and digits. A delete is irreversible, so its ids are checked before any
# call: "..", "/" or "?" in a path segment could send the DELETE to another resource.
DIRECTORY_ID = re.compile(r"POOL_[A-Za-z0-9_-]{1,64}")
CONTACT_ID = re.compile(r"CID_[A-Za-z0-9_-]{1,64}")


class DeleteContactPayload(_Payload):
    directoryId: str
    contactId: str | None = None
    extRef: str | None = None
    email: str | None = None
    phone: str | None = None

    @field_validator("directoryId")
    @classmethod
    def _directory_id(cls, value: str) -> str:
        if not DIRECTORY_ID.fullmatch(value):
            raise ValueError(f"must be a directory id (POOL_ then letters and digits), got {value[:80]!r}")
        return value

    @field_validator("contactId")
    @classmethod
    def _contact_id(cls, value: str | None) -> str | None:
        if value is not None and not CONTACT_ID.fullmatch(value):
            raise ValueError(f"must be a contact id (CID_ then letters and digits), got {value[:80]!r}")
        return value

    @model_validator(mode="after")
    def _identified(self) -> DeleteContactPayload:
        if not self.contactId and not self.lookup_identifiers():
            raise ValueError("A delete needs contactId, or at least one of extRef, email, phone, to find the "
                             "contact: none resolved for this event.")
        return self

    def lookup_identifiers(self) -> dict[str, str]:
        return lookup_identifiers(self)


class WorkflowPayload(_Payload):
    workflowUrl: str
    eventPayload: dict[str, Any] | None = None

    @field_validator("workflowUrl")
    @classmethod
    def _absolute_url(cls, value: str) -> str:
        # format: uri, as Segment checks it. Which hosts may receive the token (https Qualtrics hosts,
        # or QUALTRICS_BASE_URL's origin) is the Qualtrics client's decision: it knows the base URL.
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"must be an absolute https URL, got {value!r}")
        return value


# --- dates ----------------------------------------------------------------------------------------

_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NUMERIC = re.compile(r"^-?\d+(\.\d+)?$")


def qualtrics_datetime(value: Any) -> str:
    """Any date Segment users send → Qualtrics' UTC ``YYYY-MM-DD HH:MM:SS``.

    Numbers (and numeric strings) are epoch milliseconds; ISO strings with Z or an offset keep their
    instant; a date alone is UTC midnight; a string without a zone is read as UTC (not the host's zone).
    Anything else is an error, never "now" (Segment falls back to now: a bug we do not copy).
    """
    if isinstance(value, bool):
        raise ValueError(f"is not a date: {value!r}")
    if isinstance(value, str) and _NUMERIC.match(value.strip()):
        value = float(value)
    if isinstance(value, int | float):
        try:
            moment = datetime.fromtimestamp(value / 1000, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"epoch milliseconds out of range: {value!r}") from None
    elif isinstance(value, str):
        text = value.strip()
        try:
            if _DATE_ONLY.match(text):
                moment = datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
            else:
                moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError(f"is not a date Qualtrics can take: {value!r}") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    else:
        raise ValueError(f"is not a date: {value!r}")
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


# --- actions --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ActionDefinition:
    """One action. Add one to ``ACTIONS`` and its prefix to template.yaml's ``Actions`` list (docs/architecture.md)."""

    slug: str                      # Segment's actionSlug; also ACTION_SLUG and the metrics' `action` dimension
    title: str
    fields: dict[str, Field]
    payload_model: type[_Payload]
    default_trigger: str | None
    # "module:Class" of the executor: a worker imports its own action's executor only (and destination/
    # stays free of the delivery layer and its HTTP client).
    executor: str
    default_mapping: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        defaults = {k: f.default for k, f in self.fields.items() if f.default is not UNDEFINED}
        object.__setattr__(self, "default_mapping", defaults)

    @property
    def prefix(self) -> str:
        """Logical-id prefix in template.yaml: <prefix>Queue, <prefix>DeadLetterQueue, <prefix>Function."""
        return self.slug[:1].upper() + self.slug[1:]

    @property
    def queue_variable(self) -> str:
        """The ingest's environment variable holding this action's queue URL (ADD_CONTACT_TO_XMD_QUEUE_URL)."""
        return re.sub(r"(?<!^)(?=[A-Z])", "_", self.slug).upper() + "_QUEUE_URL"

    def executor_class(self) -> Any:
        module, _, name = self.executor.partition(":")
        return getattr(importlib.import_module(module), name)

    def build_payload(self, mapping: dict[str, Any], event: dict[str, Any]) -> _Payload:
        """Resolve ``mapping`` against ``event`` and validate it. Raises PermanentError(invalid_payload)."""
        try:
            resolved = resolve_mapping(mapping, event)
        except MappingError as exc:
            # e.g. @json decode of a value that is not JSON: this event can never map, so no retry.
            raise PermanentError("invalid_payload", f"the mapping cannot be applied to this event: {exc}") from None
        # Segment drops root keys that are missing, "" or null (no Qualtrics field allows null).
        cleaned = {k: v for k, v in resolved.items() if k in self.fields and v is not None and v != ""}
        try:
            return self.payload_model.model_validate(cleaned)
        except ValidationError as exc:
            raise PermanentError("invalid_payload", describe_payload_error(exc)) from None


def describe_payload_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"])
        if err["type"] == "missing":
            parts.append(f"The root value is missing the required field '{where}'.")
        else:
            message = err["msg"].removeprefix("Value error, ")
            if not where:   # a rule on the payload as a whole: its message says it all
                parts.append(message)
                continue
            parts.append(f"The field '{where}' {message}" if message.startswith(("is ", "must ", "epoch")) else
                         f"The field '{where}' is invalid: {message}.")
    return " ".join(parts)


_EXECUTORS = "segment_qualtrics.delivery.executors"

ACTIONS: dict[str, ActionDefinition] = {
    a.slug: a
    for a in (
        ActionDefinition("addContactToXmd", "Create and/or update contact in XM Directory", CONTACT_FIELDS,
                         ContactPayload, 'type = "identify"', f"{_EXECUTORS}:AddContactExecutor"),
        ActionDefinition("upsertContactTransaction", "Upsert contact transaction", TRANSACTION_FIELDS,
                         TransactionPayload, 'type = "track" and event = "Transaction Created"',
                         "segment_qualtrics.delivery.transactions:TransactionExecutor"),
        ActionDefinition("triggerXflowWorkflow", "Start a workflow in Qualtrics", WORKFLOW_FIELDS, WorkflowPayload,
                         None, f"{_EXECUTORS}:WorkflowExecutor"),
        ActionDefinition("deleteContact", "Delete contact from XM Directory", DELETE_CONTACT_FIELDS,
                         DeleteContactPayload, 'type = "delete"',
                         "segment_qualtrics.delivery.executors_delete:DeleteContactExecutor"),
    )
}

