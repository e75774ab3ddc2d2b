"""upsertContactTransaction, batched: fewer Qualtrics calls than Segment, exactly once.

For a batch of messages:
1. Resolve each contact: a known ``contactId``; else the contact cache; else one search per distinct
   (directory, identifiers) in the batch; 0 matches → create it once, 1 → use it, more → a permanent
   ``directory_lookup_error`` for those messages.
2. A message whose earlier attempt may have reached Qualtrics (``recovering``) is first looked for among
   the contact's transactions, by the ``segmentMessageId`` we put in its data: found = delivered.
3. One ``POST .../transactions`` per directory with one key per message. The key is derived from the
   message's idempotency key. ``unprocessedTransactions`` fail only their own message.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .actions import TransactionPayload
from .errors import DestinationError, PermanentError, RetryableError
from .qualtrics import QualtricsClient
from .worker import Delivery

MARKER_FIELD = "segmentMessageId"   # written into each transaction's data; lets a retry find it
MAX_PER_CALL = 100


class ContactCache:
    """(directory, identifiers) → contactId, bounded and short-lived, kept across warm invocations."""

    def __init__(self, max_entries: int = 10_000, ttl_seconds: float = 300.0, clock=time.monotonic) -> None:
        self.max_entries = max_entries
        self.ttl = ttl_seconds
        self.clock = clock
        self._entries: OrderedDict[tuple, tuple[str, float]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple) -> str | None:
        entry = self._entries.get(key)
        if entry is None or entry[1] < self.clock():
            self._entries.pop(key, None)
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[0]

    def put(self, key: tuple, contact_id: str) -> None:
        self._entries[key] = (contact_id, self.clock() + self.ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def drop_contact(self, contact_id: str) -> None:
        for key in [k for k, (cid, _) in self._entries.items() if cid == contact_id]:
            del self._entries[key]


def transaction_key(delivery: Delivery) -> str:
    """Deterministic per message, so a retried call carries the same key (Segment's is random)."""
    return "seg" + hashlib.sha256(delivery.message.idempotency_key.encode()).hexdigest()[:24]


@dataclass
class _Lookup:
    directory_id: str
    identifiers: dict[str, str]
    creator: TransactionPayload        # the first message's fields create the contact when none exists
    deliveries: list[Delivery]


class TransactionExecutor:
    def __init__(self, client: QualtricsClient, cache: ContactCache | None = None) -> None:
        self.client = client
        self.cache = cache or ContactCache()

    def execute(self, deliveries: Sequence[Delivery]) -> dict[str, DestinationError]:
        errors: dict[str, DestinationError] = {}
        contacts, from_cache = self._resolve_contacts(deliveries, errors)
        pending = [d for d in deliveries if d.record_id not in errors]
        pending = self._skip_already_recorded(pending, contacts, errors)
        by_directory: dict[str, list[Delivery]] = defaultdict(list)
        for delivery in pending:
            by_directory[delivery.payload.directoryId].append(delivery)
        for directory_id, group in by_directory.items():
            for start in range(0, len(group), MAX_PER_CALL):
                self._post(directory_id, group[start:start + MAX_PER_CALL], contacts, from_cache, errors)
        return errors

    # --- step 1: contacts -------------------------------------------------------------------------
    def _resolve_contacts(self, deliveries: Sequence[Delivery], errors: dict[str, DestinationError]
                          ) -> tuple[dict[str, str], set[str]]:
        contacts: dict[str, str] = {}     # record_id -> contactId
        from_cache: set[str] = set()      # record ids whose contact id came from a lookup or the cache
        lookups: dict[tuple, _Lookup] = {}
        for delivery in deliveries:
            payload: TransactionPayload = delivery.payload
            if payload.contactId:
                contacts[delivery.record_id] = payload.contactId
                continue
            identifiers = payload.lookup_identifiers()
            key = (payload.directoryId, tuple(identifiers.items()))
            from_cache.add(delivery.record_id)
            cached = self.cache.get(key)
            if cached:
                contacts[delivery.record_id] = cached
            elif key in lookups:
                lookups[key].deliveries.append(delivery)   # same identifiers in this batch: one search
            else:
                lookups[key] = _Lookup(payload.directoryId, identifiers, payload, [delivery])
        for key, lookup in lookups.items():
            try:
                contact_id = self._find_or_create(lookup)
            except DestinationError as exc:
                errors.update({d.record_id: exc for d in lookup.deliveries})
                continue
            self.cache.put(key, contact_id)
            contacts.update({d.record_id: contact_id for d in lookup.deliveries})
        return contacts, from_cache

    def _find_or_create(self, lookup: _Lookup) -> str:
        matches = self.client.search_contacts(lookup.directory_id, lookup.identifiers)
        if len(matches) == 1 and matches[0].get("id"):
            return matches[0]["id"]
        if len(matches) > 1:
            fields = ", ".join(lookup.identifiers)
            raise PermanentError("directory_lookup_error",
                                 f"{len(matches)} contacts in directory {lookup.directory_id} match {fields}; "
                                 "expected one and only one")
        return self.client.create_contact(lookup.directory_id, lookup.creator.contact_body())

    # --- step 2: an earlier attempt may have landed -------------------------------------------------
    def _skip_already_recorded(self, pending: list[Delivery], contacts: dict[str, str],
                               errors: dict[str, DestinationError]) -> list[Delivery]:
        still: list[Delivery] = []
        listed: dict[tuple[str, str], set[str]] = {}
        for delivery in pending:
            if not delivery.recovering:
                still.append(delivery)
                continue
            where = (delivery.payload.directoryId, contacts[delivery.record_id])
            try:
                if where not in listed:
                    elements = self.client.list_contact_transactions(*where)
                    listed[where] = {str((e.get("data") or {}).get(MARKER_FIELD)) for e in elements}
            except DestinationError as exc:
                errors[delivery.record_id] = exc
                continue
            if delivery.message.message_id not in listed[where]:
                still.append(delivery)
        return still

    # --- step 3: one call per directory -----------------------------------------------------------
    def _post(self, directory_id: str, group: list[Delivery], contacts: dict[str, str], from_cache: set[str],
              errors: dict[str, DestinationError]) -> None:
        keyed = {transaction_key(d): d for d in group}
        body = {key: self._transaction(d, contacts[d.record_id]) for key, d in keyed.items()}
        try:
            result = self.client.create_transactions(directory_id, body)
        except DestinationError as exc:
            errors.update({d.record_id: exc for d in group})
            return
        for key, delivery in keyed.items():
            if key in result.created:
                continue
            problem = result.unprocessed.get(key)
            if problem is None:
                errors[delivery.record_id] = RetryableError(
                    "qualtrics_bad_response", "Qualtrics listed the transaction neither created nor unprocessed",
                    request_id=result.request_id)
                continue
            text = f"{problem.get('error') or 'unprocessed'}: {problem.get('errorMessage') or ''}".strip(": ")
            contact_id = contacts[delivery.record_id]
            if delivery.record_id in from_cache and "contact" in text.lower():
                # A cached contact id Qualtrics no longer knows (deleted, merged): look it up again next time.
                self.cache.drop_contact(contact_id)
                errors[delivery.record_id] = RetryableError("stale_contact", f"transaction unprocessed: {text}",
                                                            request_id=result.request_id)
            else:
                errors[delivery.record_id] = PermanentError("transaction_unprocessed",
                                                            f"transaction unprocessed: {text}",
                                                            request_id=result.request_id)

    @staticmethod
    def _transaction(delivery: Delivery, contact_id: str) -> dict[str, Any]:
        payload: TransactionPayload = delivery.payload
        data = {**(payload.transactionData or {}), MARKER_FIELD: delivery.message.message_id}
        date = payload.transactionDate or _received_date(delivery)
        return {"contactId": contact_id, "mailingListId": payload.mailingListId, "data": data,
                "transactionDate": date}


def _received_date(delivery: Delivery) -> str:
    """No transactionDate and no event timestamp: when the ingest accepted the event (stable on retries)."""
    from .actions import qualtrics_datetime

    try:
        return qualtrics_datetime(delivery.message.received_at)
    except ValueError:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
