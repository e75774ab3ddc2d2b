"""The backfill's pure core: an input record → its deliveries (bulk or queue lane) or rejects; bulk
deliveries → transaction-contacts imports within Qualtrics' limits. No I/O.

An event goes through the live rules: the ingest's body checks (``read_body``, ``validate_event``, the
256 KiB event limit), the subscriptions' triggers (the ingest's ``Router``) and each matched subscription's
mapping and payload rules (``build_payload``). Each matched subscription gives one ``Item`` carrying the
idempotency key a live message of the same event would have, so live and backfilled copies are recognised.

Lanes, per action: ``bulk`` (a contact of an import) for contacts when a mailing list is given for them,
and for transactions; ``queue`` (the action's queue, delivered by the normal workers) for workflows and
whatever an import cannot express: a transaction for a given ``contactId``, or a contact whose embedded
data uses a name its own transaction data uses.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from segment_qualtrics.delivery.transactions import DELIVERY_KEY_FIELD, MARKER_FIELD, transaction_key
from segment_qualtrics.delivery.worker import QueuedWork
from segment_qualtrics.destination.actions import ContactPayload, TransactionPayload, qualtrics_datetime
from segment_qualtrics.destination.envelope import QueueMessage, encode_event
from segment_qualtrics.destination.errors import DestinationError
from segment_qualtrics.destination.subscriptions import Subscription
from segment_qualtrics.ingest.core import MAX_EVENT_BYTES, Router
from segment_qualtrics.segment.events import BodyError, read_body, validate_event

BULK, QUEUE = "bulk", "queue"
CONTACTS, TRANSACTIONS, WORKFLOWS = "addContactToXmd", "upsertContactTransaction", "triggerXflowWorkflow"
DATE_FIELD = "segmentTransactionDate"   # the event's transaction date: an import has no field of its own for it
IMPORT_MAX_CONTACTS = 10_000
IMPORT_MAX_BYTES = 5 * 1024 * 1024
_BODY_MARGIN = 64 * 1024                # transactionMeta and the JSON around the contacts
_CONTACT_KEYS = ("firstName", "lastName", "email", "phone", "extRef", "language", "unsubscribed", "embeddedData")
MAX_REASON_CHARS = 1000


@dataclass(frozen=True, slots=True)
class Reject:
    line: int
    reason: str
    subscription: str | None = None
    message_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"line": self.line, "reason": self.reason[:MAX_REASON_CHARS]}
        if self.subscription is not None:
            entry["subscription"] = self.subscription
        if self.message_id is not None:
            entry["messageId"] = self.message_id
        return entry


@dataclass(slots=True)
class Item:
    """One matched subscription of one input event, on its way to Qualtrics."""

    line: int
    subscription: str
    action: str
    message_id: str
    key: str                       # the idempotency key a live message of this event has
    lane: str
    received_at: str
    event: dict[str, Any]
    directory: str | None = None   # bulk: the import's directory and mailing list
    mailing_list: str | None = None
    contact: dict[str, Any] | None = None   # bulk: the import's contact entry
    why_queue: str | None = None   # queue lane for an action that is otherwise bulk: why

    @property
    def claims(self) -> bool:
        """Whether this item takes the idempotency key before it is sent (transactions: not idempotent)."""
        return self.action == TRANSACTIONS

    def message(self) -> QueueMessage:
        return QueueMessage(self.action, self.subscription, self.message_id, self.received_at, self.event)

    def import_entry(self) -> tuple[str, str, dict[str, Any]]:
        """A bulk item's directory, mailing list and contact entry (the planner sets all three together)."""
        if self.directory is None or self.mailing_list is None or self.contact is None:
            raise ValueError(f"line {self.line} ({self.subscription}) is not planned for an import")
        return self.directory, self.mailing_list, self.contact


@dataclass
class Planned:
    """What one input record gives."""

    items: list[Item] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    matched: list[str] = field(default_factory=list)   # subscription names whose trigger matched
    duplicates: int = 0                                # items of an event already met in this run
    valid: bool = False                                # a valid event (matched or not)


class Planner:
    def __init__(self, subscriptions: Sequence[Subscription], lanes: dict[str, str],
                 contacts_mailing_list: str | None = None) -> None:
        self.subscriptions = {s.name: s for s in subscriptions}
        self.router = Router(subscriptions)
        self.lanes = lanes
        self.contacts_mailing_list = contacts_mailing_list
        self._seen: set[bytes] = set()   # keys met in this run (digests: a few bytes per event)

    def plan(self, line: int, data: bytes | None, problem: str | None = None) -> Planned:
        planned = Planned()
        if problem is not None or data is None:
            planned.rejects.append(Reject(line, problem or "unreadable"))
            return planned
        event, reason = parse_event(data)
        if event is None:
            planned.rejects.append(Reject(line, reason))
            return planned
        planned.valid = True
        message_id = event["messageId"]
        received_at = _received_at(event)
        for slug, name, _head in self.router.matching(event):
            planned.matched.append(name)
            subscription = self.subscriptions[name]
            try:
                payload = subscription.action.build_payload(subscription.mapping, event)
            except DestinationError as exc:
                planned.rejects.append(Reject(line, f"{exc.code}: {exc.message}", name, message_id))
                continue
            except Exception as exc:  # noqa: BLE001 - as the worker: this event's outcome, never the run's
                planned.rejects.append(Reject(line, f"internal_error: {type(exc).__name__}: {exc}"[:500], name,
                                              message_id))
                continue
            item = Item(line, name, slug, message_id, "", QUEUE, received_at, event)
            item.key = item.message().idempotency_key
            digest = hashlib.blake2b(item.key.encode("utf-8", "surrogatepass"), digest_size=16).digest()
            if digest in self._seen:
                planned.duplicates += 1
                continue
            self._seen.add(digest)
            try:
                self._choose_lane(item, payload)
            except ValueError as exc:
                planned.rejects.append(Reject(line, f"invalid_payload: {exc}", name, message_id))
                continue
            planned.items.append(item)
        return planned

    def _choose_lane(self, item: Item, payload: Any) -> None:
        lane = self.lanes.get(item.action, QUEUE)
        if lane != BULK or item.action == WORKFLOWS:
            return
        if isinstance(payload, TransactionPayload):
            if payload.contactId:
                item.why_queue = "a transaction for a given contactId (an import matches contacts by itself)"
                return
            data = {**(payload.transactionData or {}), MARKER_FIELD: item.message_id,
                    DELIVERY_KEY_FIELD: transaction_key(QueuedWork("", "", "", 1, message=item.message())),
                    DATE_FIELD: payload.transactionDate or _date_or_none(item.received_at)}
            contact = import_contact(payload, {k: v for k, v in data.items() if v is not None})
            mailing_list = payload.mailingListId
        elif isinstance(payload, ContactPayload):
            if not self.contacts_mailing_list:
                return
            contact, mailing_list = import_contact(payload, None), self.contacts_mailing_list
        else:
            return
        if set(contact.get("embeddedData", {})) & set(contact.get("transactionData", {})):
            item.why_queue = "embedded data and transaction data share a name (an import refuses that)"
            return
        item.lane, item.directory, item.mailing_list, item.contact = BULK, payload.directoryId, mailing_list, contact


def parse_event(data: bytes) -> tuple[dict[str, Any] | None, str]:
    """One record's bytes → a valid Segment event with its messageId, or None and why (the ingest's rules)."""
    if data[:1] != b"{":
        return None, "a record must be one JSON object (a Segment event)"
    try:
        events, _ = read_body(data)
    except BodyError as exc:
        return None, f"{exc.code}: {exc.message}"
    except RecursionError:
        return None, "too_deep: the event is nested too deep to read"
    if len(events) != 1:   # a {"batch": [...]} object: one event per record, as Segment's exports have
        return None, "a record must be one event, not a batch"
    try:
        event = validate_event(events[0], from_json=True)
    except ValueError as exc:
        return None, f"invalid_event: {exc}"
    size = len(encode_event(event).encode("utf-8", "surrogatepass"))
    if size > MAX_EVENT_BYTES:
        return None, f"invalid_event: the event is {size} bytes; the limit is {MAX_EVENT_BYTES} (as live)"
    return event, ""


def _received_at(event: dict[str, Any]) -> str:
    """The time the live ingest would have stamped: Segment's receivedAt, else the event's timestamp."""
    for name in ("receivedAt", "timestamp"):
        value = event.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


def _date_or_none(text: str) -> str | None:
    try:
        return qualtrics_datetime(text) if text else None
    except ValueError:
        return None


def import_contact(payload: ContactPayload, transaction_data: dict[str, Any] | None) -> dict[str, Any]:
    """A contact entry of a transaction-contacts import: fields present only, never null."""
    entry = {k: getattr(payload, k) for k in _CONTACT_KEYS if getattr(payload, k) is not None}
    if entry.get("embeddedData") == {}:
        del entry["embeddedData"]
    if transaction_data:
        entry["transactionData"] = transaction_data
    return entry


# --- imports ------------------------------------------------------------------------------------

@dataclass
class ImportBatch:
    directory: str
    mailing_list: str
    items: list[Item] = field(default_factory=list)
    fields: dict[str, None] = field(default_factory=dict)     # transaction data names (ordered)
    embedded: set[str] = field(default_factory=set)
    size: int = 0

    def fits(self, item: Item, size: int, max_contacts: int, max_bytes: int) -> bool:
        if len(self.items) >= max_contacts or self.size + size > max_bytes:
            return False
        contact = item.import_entry()[2]
        data, embedded = contact.get("transactionData", {}), contact.get("embeddedData", {})
        # Qualtrics refuses a contact whose embedded data names a transaction field of the import.
        return not (set(data) & self.embedded or set(embedded) & self.fields.keys())

    def add(self, item: Item, size: int) -> None:
        contact = item.import_entry()[2]
        self.items.append(item)
        self.fields.update(dict.fromkeys(contact.get("transactionData", {})))
        self.embedded.update(contact.get("embeddedData", {}))
        self.size += size

    def body(self, batch_id: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"contacts": [item.contact for item in self.items]}
        if self.fields:
            body["transactionMeta"] = {"batchId": batch_id, "fields": list(self.fields)}
        return body


def contact_size(contact: dict[str, Any]) -> int:
    return len(json.dumps(contact, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")) + 1


def import_batches(items: Iterable[Item], max_contacts: int = IMPORT_MAX_CONTACTS,
                   max_bytes: int = IMPORT_MAX_BYTES - _BODY_MARGIN) -> tuple[list[ImportBatch], list[Item]]:
    """Bulk items → imports per (directory, mailing list), in input order, each within the limits; and the
    items no import can hold (``why_queue`` says why), for the queue lane."""
    open_batches: dict[tuple[str, str], ImportBatch] = {}
    done: list[ImportBatch] = []
    too_big: list[Item] = []
    for item in items:
        directory, mailing_list, contact = item.import_entry()
        size = contact_size(contact)
        if size > max_bytes:
            item.why_queue = f"the contact is {size} bytes, more than an import may hold"
            too_big.append(item)
            continue
        if set(contact.get("embeddedData", {})) & set(contact.get("transactionData", {})):
            item.why_queue = "embedded data and transaction data share a name (an import refuses that)"
            too_big.append(item)
            continue
        group = (directory, mailing_list)
        batch = open_batches.get(group)
        if batch is None or not batch.fits(item, size, max_contacts, max_bytes):
            if batch is not None:
                done.append(batch)
            batch = open_batches[group] = ImportBatch(*group)
        batch.add(item, size)
    done += open_batches.values()
    return done, too_big
