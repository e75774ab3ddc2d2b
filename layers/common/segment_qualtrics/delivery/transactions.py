"""upsertContactTransaction, batched: fewer Qualtrics calls than Segment, exactly once.

For a batch of messages:
1. Resolve each contact: a known ``contactId``; else the contact cache; else one search per distinct
   (directory, identifiers) in the batch; 0 matches → create it once, 1 → use it, more → a permanent
   ``directory_lookup_error`` for those messages.
2. A message whose earlier attempt may have reached Qualtrics (``recovering``) is first looked for among
   the contact's transactions, by the ``segmentDeliveryKey`` we put in its data (a hash of the idempotency
   key: action, subscription, messageId): found = delivered. ``segmentMessageId`` is written too, for people.
3. One ``POST .../transactions`` per directory with one key per message. The key is derived from the
   message's idempotency key. ``unprocessedTransactions`` fail only their own message. The messages that
   call created are reported delivered (marked done) right after it, before the next call starts.

No call starts that could not finish before the invocation's timeout (``Progress.can_call``): the messages
not reached are left unreported, and the worker hands them back.

Transactions written before ``segmentDeliveryKey`` existed carry only ``segmentMessageId``, which another
subscription's transaction for the same event and contact also carries. Such a transaction counts as proof
only when ``legacy_marker_trusted`` (the worker sets it when this action has a single subscription).
"""

from __future__ import annotations

import hashlib
import time
import weakref
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from segment_qualtrics.delivery.qualtrics_api import QualtricsApi
from segment_qualtrics.delivery.worker import Progress, QueuedWork, internal_error
from segment_qualtrics.destination.actions import TransactionPayload
from segment_qualtrics.destination.errors import DestinationError, PermanentError, RetryableError

MARKER_FIELD = "segmentMessageId"   # written into each transaction's data, for people and older records
# A contact lookup: (directoryId, its identifiers as (field, value) pairs).
CacheKey = tuple[str, tuple[tuple[str, str], ...]]
DELIVERY_KEY_FIELD = "segmentDeliveryKey"   # transaction_key(): names the idempotency key; a retry finds it
MAX_PER_CALL = 100


class ContactCache:
    """(directory, identifiers) → contactId, bounded and short-lived, kept across warm invocations.

    Every cache of the process is known to ``forget_contact``: a contact deleted here leaves them all at once.
    """

    def __init__(self, max_entries: int = 10_000, ttl_seconds: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        _CACHES.add(self)
        self.max_entries = max_entries
        self.ttl = ttl_seconds
        self.clock = clock
        self._entries: OrderedDict[CacheKey, tuple[str, float]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: CacheKey) -> str | None:
        entry = self._entries.get(key)
        if entry is None or entry[1] < self.clock():
            self._entries.pop(key, None)
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[0]

    def put(self, key: CacheKey, contact_id: str) -> None:
        self._entries[key] = (contact_id, self.clock() + self.ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def drop_contact(self, contact_id: str) -> None:
        for key in [k for k, (cid, _) in self._entries.items() if cid == contact_id]:
            del self._entries[key]


_CACHES: weakref.WeakSet[ContactCache] = weakref.WeakSet()


def forget_contact(contact_id: str) -> None:
    """Drop a contact id (deleted, or gone) from every contact cache this process holds."""
    for cache in list(_CACHES):
        cache.drop_contact(contact_id)


def transaction_key(delivery: QueuedWork) -> str:
    """Deterministic per message, so a retried call carries the same key (Segment's is random)."""
    data = delivery.queued.idempotency_key.encode("utf-8", "surrogatepass")   # as the key itself is hashed
    return "seg" + hashlib.sha256(data).hexdigest()[:24]


@dataclass
class _Lookup:
    directory_id: str
    identifiers: dict[str, str]
    creator: TransactionPayload        # the first message's fields create the contact when none exists
    deliveries: list[QueuedWork]


class TransactionExecutor:
    def __init__(self, client: QualtricsApi, cache: ContactCache | None = None,
                 legacy_marker_trusted: bool = False) -> None:
        self.client = client
        self.cache = cache or ContactCache()
        # A transaction with segmentMessageId but no segmentDeliveryKey (written by an older version) proves
        # this message landed only if no other subscription could have written it.
        self.legacy_marker_trusted = legacy_marker_trusted

    def execute(self, deliveries: Sequence[QueuedWork], progress: Progress | None = None
                ) -> dict[str, DestinationError]:
        progress = progress or Progress()
        errors: dict[str, DestinationError] = {}
        contacts, from_cache = self._resolve_contacts(deliveries, errors, progress)
        pending = [d for d in deliveries if d.sqs_message_id in contacts and d.sqs_message_id not in errors]
        pending = self._skip_already_recorded(pending, contacts, errors, progress)
        by_directory: dict[str, list[QueuedWork]] = defaultdict(list)
        for delivery in pending:
            by_directory[delivery.payload.directoryId].append(delivery)
        for directory_id, group in by_directory.items():
            for start in range(0, len(group), MAX_PER_CALL):
                if not progress.can_call():
                    return errors   # the rest stays unreported: the worker hands it back
                self._post(directory_id, group[start:start + MAX_PER_CALL], contacts, from_cache, errors,
                           progress)
        return errors

    # --- step 1: contacts -------------------------------------------------------------------------
    def _resolve_contacts(self, deliveries: Sequence[QueuedWork], errors: dict[str, DestinationError],
                          progress: Progress) -> tuple[dict[str, str], set[str]]:
        contacts: dict[str, str] = {}     # sqs_message_id -> contactId
        from_cache: set[str] = set()      # record ids whose contact id came from a lookup or the cache
        lookups: dict[CacheKey, _Lookup] = {}
        for delivery in deliveries:
            try:
                payload: TransactionPayload = delivery.payload
                if payload.contactId:
                    contacts[delivery.sqs_message_id] = payload.contactId
                    continue
                identifiers = payload.lookup_identifiers()
                key = (payload.directoryId, tuple(identifiers.items()))
                cached = self.cache.get(key)
            except Exception as exc:  # noqa: BLE001 - fails this message only
                errors[delivery.sqs_message_id] = internal_error(exc)
                continue
            from_cache.add(delivery.sqs_message_id)
            if cached:
                contacts[delivery.sqs_message_id] = cached
            elif key in lookups:
                lookups[key].deliveries.append(delivery)   # same identifiers in this batch: one search
            else:
                lookups[key] = _Lookup(payload.directoryId, identifiers, payload, [delivery])
        for key, lookup in lookups.items():
            if not progress.can_call():
                break   # a search (and maybe a create) would not finish in time: these wait
            try:
                contact_id = self._find_or_create(lookup)
            except Exception as exc:  # noqa: BLE001 - classified or not, it fails only this lookup's messages
                errors.update({d.sqs_message_id: internal_error(exc) for d in lookup.deliveries})
                continue
            self.cache.put(key, contact_id)
            contacts.update({d.sqs_message_id: contact_id for d in lookup.deliveries})
        return contacts, from_cache

    def _find_or_create(self, lookup: _Lookup) -> str:
        matches = self.client.search_contacts(lookup.directory_id, lookup.identifiers)
        if len(matches) == 1 and matches[0].get("id"):
            contact_id: str = matches[0]["id"]
            return contact_id
        if len(matches) > 1:
            fields = ", ".join(lookup.identifiers)
            raise PermanentError("directory_lookup_error",
                                 f"{len(matches)} contacts in directory {lookup.directory_id} match {fields}; "
                                 "expected one and only one")
        return self.client.create_contact(lookup.directory_id, lookup.creator.contact_body())

    # --- step 2: an earlier attempt may have landed -------------------------------------------------
    def _skip_already_recorded(self, pending: list[QueuedWork], contacts: dict[str, str],
                               errors: dict[str, DestinationError], progress: Progress) -> list[QueuedWork]:
        still: list[QueuedWork] = []
        listed: dict[tuple[str, str], _Recorded] = {}
        for delivery in pending:
            if not delivery.recovering:
                still.append(delivery)
                continue
            where = (delivery.payload.directoryId, contacts[delivery.sqs_message_id])
            try:
                if where not in listed:
                    if not progress.can_call():
                        continue   # not checked in time: left unreported, handed back
                    listed[where] = _Recorded.of(self.client.list_contact_transactions(*where))
                found = listed[where].holds(delivery, self.legacy_marker_trusted)
            except Exception as exc:  # noqa: BLE001 - fails this message only
                errors[delivery.sqs_message_id] = internal_error(exc)
                continue
            if found:
                progress.delivered(delivery)
            else:
                delivery.checked_absent = True   # the earlier attempt did not land
                still.append(delivery)
        return still

    # --- step 3: one call per directory -----------------------------------------------------------
    def _post(self, directory_id: str, group: list[QueuedWork], contacts: dict[str, str], from_cache: set[str],
              errors: dict[str, DestinationError], progress: Progress) -> None:
        keyed: dict[str, QueuedWork] = {}
        body: dict[str, dict[str, Any]] = {}
        for delivery in group:
            try:
                key = transaction_key(delivery)
                body[key] = self._transaction(delivery, contacts[delivery.sqs_message_id])
            except Exception as exc:  # noqa: BLE001 - fails this message only
                errors[delivery.sqs_message_id] = internal_error(exc)
                continue
            keyed[key] = delivery
        if not keyed:
            return
        for delivery in keyed.values():
            delivery.sent = True
        try:
            result = self.client.create_transactions(directory_id, body)
        except Exception as exc:  # noqa: BLE001 - classified or not, it fails this call's messages
            error = internal_error(exc)
            errors.update({d.sqs_message_id: error for d in keyed.values()})
            return
        for key, delivery in keyed.items():
            if key in result.created:
                progress.delivered(delivery)   # marked done now, before the next call
                continue
            problem = result.unprocessed.get(key)
            if problem is None:
                errors[delivery.sqs_message_id] = RetryableError(
                    "qualtrics_bad_response", "Qualtrics listed the transaction neither created nor unprocessed",
                    request_id=result.request_id)
                continue
            text = f"{problem.get('error') or 'unprocessed'}: {problem.get('errorMessage') or ''}".strip(": ")
            contact_id = contacts[delivery.sqs_message_id]
            if delivery.sqs_message_id in from_cache and "contact" in text.lower():
                # A cached contact id Qualtrics no longer knows (deleted, merged): look it up again next time.
                self.cache.drop_contact(contact_id)
                errors[delivery.sqs_message_id] = RetryableError("stale_contact", f"transaction unprocessed: {text}",
                                                            request_id=result.request_id)
            else:
                errors[delivery.sqs_message_id] = PermanentError("transaction_unprocessed",
                                                            f"transaction unprocessed: {text}",
                                                            request_id=result.request_id)

    @staticmethod
    def _transaction(delivery: QueuedWork, contact_id: str) -> dict[str, Any]:
        payload: TransactionPayload = delivery.payload
        data = {**(payload.transactionData or {}), MARKER_FIELD: delivery.queued.message_id,
                DELIVERY_KEY_FIELD: transaction_key(delivery)}
        date = payload.transactionDate or _received_date(delivery)
        return {"contactId": contact_id, "mailingListId": payload.mailingListId, "data": data,
                "transactionDate": date}


@dataclass(frozen=True)
class _Recorded:
    """What a contact's transactions say about earlier attempts."""

    keys: frozenset[str]            # segmentDeliveryKey values
    legacy_ids: frozenset[str]      # segmentMessageId of transactions without a segmentDeliveryKey

    @classmethod
    def of(cls, elements: list[dict[str, Any]]) -> _Recorded:
        keys: set[str] = set()
        legacy: set[str] = set()
        for element in elements:
            data = element.get("data") if isinstance(element, dict) else None
            if not isinstance(data, dict):
                continue
            if data.get(DELIVERY_KEY_FIELD) is not None:
                keys.add(str(data[DELIVERY_KEY_FIELD]))
            elif data.get(MARKER_FIELD) is not None:
                legacy.add(str(data[MARKER_FIELD]))
        return cls(frozenset(keys), frozenset(legacy))

    def holds(self, delivery: QueuedWork, legacy_trusted: bool) -> bool:
        if transaction_key(delivery) in self.keys:
            return True
        return legacy_trusted and delivery.queued.message_id in self.legacy_ids


def _received_date(delivery: QueuedWork) -> str:
    """No transactionDate and no event timestamp: when the ingest accepted the event (stable on retries)."""
    from segment_qualtrics.destination.actions import qualtrics_datetime

    try:
        return qualtrics_datetime(delivery.queued.received_at)
    except ValueError:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
