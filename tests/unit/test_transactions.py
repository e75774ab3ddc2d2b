"""upsertContactTransaction, batched and exactly once (transactions.py).

Pure tests: the Qualtrics client is a small in-memory fake with the four calls the executor makes.
Real HTTP against the Qualtrics sandbox is covered by the integration tests.
"""

from __future__ import annotations

from typing import Any

from segment_qualtrics.adapters.qualtrics import TransactionResult
from segment_qualtrics.delivery.transactions import (
    DELIVERY_KEY_FIELD,
    MARKER_FIELD,
    MAX_PER_CALL,
    ContactCache,
    TransactionExecutor,
    transaction_key,
)
from segment_qualtrics.delivery.worker import Progress, QueuedWork
from segment_qualtrics.destination.actions import ACTIONS
from segment_qualtrics.destination.envelope import QueueMessage
from segment_qualtrics.destination.errors import PermanentError, RetryableError

UPSERT = ACTIONS["upsertContactTransaction"]
MAPPING = {**UPSERT.default_mapping, "directoryId": {"@path": "$.properties.directory"}, "mailingListId": "CG_1",
           "transactionData": {"@path": "$.properties.data"}}


class FakeQualtrics:
    """Directories of contacts and transactions in memory; records every call."""

    def __init__(self) -> None:
        self.contacts: dict[str, list[dict[str, Any]]] = {}
        self.transactions: dict[str, list[dict[str, Any]]] = {}
        self.calls: list[tuple[str, Any]] = []
        self.gone_contacts: set[str] = set()         # contacts Qualtrics no longer knows (deleted, merged)
        self.reject: dict[str, dict[str, str]] = {}  # Segment messageId -> unprocessed entry
        self.fail_next: dict[str, Exception] = {}    # operation -> error raised once
        self.forget_keys: set[str] = set()           # keys answered neither created nor unprocessed
        self._next_id = 0

    def add_contact(self, directory_id: str, **fields: str) -> str:
        self._next_id += 1
        contact_id = f"CID_{self._next_id}"
        self.contacts.setdefault(directory_id, []).append({"id": contact_id, **fields})
        return contact_id

    def _maybe_fail(self, operation: str) -> None:
        if operation in self.fail_next:
            raise self.fail_next.pop(operation)

    def search_contacts(self, directory_id: str, identifiers: dict[str, str]) -> list[dict[str, Any]]:
        self.calls.append(("search", (directory_id, dict(identifiers))))
        self._maybe_fail("search")
        return [c for c in self.contacts.get(directory_id, [])
                if all(c.get(k) == v for k, v in identifiers.items())]

    def create_contact(self, directory_id: str, contact: dict[str, Any]) -> str:
        self.calls.append(("create_contact", (directory_id, dict(contact))))
        self._maybe_fail("create_contact")
        return self.add_contact(directory_id, **{k: v for k, v in contact.items() if isinstance(v, str)})

    def create_transactions(self, directory_id: str, transactions: dict[str, dict[str, Any]]) -> TransactionResult:
        self.calls.append(("create_transactions", (directory_id, transactions)))
        self._maybe_fail("create_transactions")
        created, unprocessed = {}, {}
        for key, transaction in transactions.items():
            message_id = transaction["data"][MARKER_FIELD]
            if key in self.forget_keys:
                continue
            if transaction["contactId"] in self.gone_contacts:
                unprocessed[key] = {"error": "INVALID_CONTACT", "errorMessage": "Contact not found"}
            elif message_id in self.reject:
                unprocessed[key] = self.reject[message_id]
            else:
                self.transactions.setdefault(directory_id, []).append({"key": key, **transaction})
                created[key] = f"CTR_{len(self.transactions[directory_id])}"
        return TransactionResult(created, unprocessed, "req-tx")

    def list_contact_transactions(self, directory_id: str, contact_id: str) -> list[dict[str, Any]]:
        self.calls.append(("list_transactions", (directory_id, contact_id)))
        self._maybe_fail("list_transactions")
        return [t for t in self.transactions.get(directory_id, []) if t["contactId"] == contact_id]

    def count(self, operation: str) -> int:
        return sum(1 for name, _ in self.calls if name == operation)

    def posted(self) -> list[tuple[str, dict[str, dict[str, Any]]]]:
        return [args for name, args in self.calls if name == "create_transactions"]


def delivery(message_id: str, *, user_id: str = "user-1", email: str | None = "ada@example.com",
             contact_id: str | None = None, directory: str = "POOL_1", timestamp: str | None = "2024-03-04T05:06:07Z",
             data: dict | None = None, recovering: bool = False, subscription: str = "Transactions",
             received_at: str = "2024-03-04T09:00:00.500Z") -> QueuedWork:
    traits: dict[str, Any] = {}
    if email:
        traits["email"] = email
    if contact_id:
        traits["qualtricsContactId"] = contact_id
    event: dict[str, Any] = {"type": "track", "event": "Transaction Created", "messageId": message_id,
                             "userId": user_id, "traits": traits,
                             "properties": {"directory": directory, "data": data or {"orderId": f"o-{message_id}"}}}
    if timestamp:
        event["timestamp"] = timestamp
    message = QueueMessage("upsertContactTransaction", subscription, message_id, received_at, event)
    d = QueuedWork(sqs_message_id=f"sqs-{message_id}", receipt_handle="rh", body=message.to_json(), attempt=1,
                 message=message, payload=UPSERT.build_payload(MAPPING, event), recovering=recovering)
    return d


def run(client: FakeQualtrics, *deliveries: QueuedWork, cache: ContactCache | None = None):
    return TransactionExecutor(client, cache).execute(list(deliveries))


def transactions_of(client: FakeQualtrics) -> dict[str, dict[str, Any]]:
    """Segment messageId -> the transaction Qualtrics recorded."""
    return {t["data"][MARKER_FIELD]: t for ts in client.transactions.values() for t in ts}


# --- contacts -------------------------------------------------------------------------------------

def test_a_known_contact_id_needs_no_search():
    client = FakeQualtrics()
    assert run(client, delivery("m-1", contact_id="CID_KNOWN")) == {}
    assert client.count("search") == 0 and client.count("create_contact") == 0
    assert transactions_of(client)["m-1"]["contactId"] == "CID_KNOWN"


def test_one_search_for_several_messages_with_the_same_identifiers():
    client = FakeQualtrics()
    existing = client.add_contact("POOL_1", extRef="user-1", email="ada@example.com")
    assert run(client, delivery("m-1"), delivery("m-2"), delivery("m-3")) == {}
    assert client.calls[0] == ("search", ("POOL_1", {"extRef": "user-1", "email": "ada@example.com"}))
    assert client.count("search") == 1
    assert {t["contactId"] for t in transactions_of(client).values()} == {existing}


def test_different_identifiers_are_searched_separately():
    client = FakeQualtrics()
    run(client, delivery("m-1", user_id="u-1"), delivery("m-2", user_id="u-2"), delivery("m-3", user_id="u-1"))
    assert client.count("search") == 2 and client.count("create_contact") == 2
    recorded = transactions_of(client)
    assert recorded["m-1"]["contactId"] == recorded["m-3"]["contactId"] != recorded["m-2"]["contactId"]


def test_no_match_creates_the_contact_once():
    client = FakeQualtrics()
    assert run(client, delivery("m-1"), delivery("m-2")) == {}
    [(directory, body)] = [args for name, args in client.calls if name == "create_contact"]
    assert directory == "POOL_1"
    assert body == {"email": "ada@example.com", "extRef": "user-1", "unsubscribed": False, "language": "EN"}
    [created] = client.contacts["POOL_1"]
    assert {t["contactId"] for t in transactions_of(client).values()} == {created["id"]}


def test_one_match_is_used():
    client = FakeQualtrics()
    existing = client.add_contact("POOL_1", extRef="user-1", email="ada@example.com")
    run(client, delivery("m-1"))
    assert client.count("create_contact") == 0
    assert transactions_of(client)["m-1"]["contactId"] == existing


def test_several_matches_fail_those_messages_only():
    client = FakeQualtrics()
    client.add_contact("POOL_1", extRef="user-1", email="ada@example.com")
    client.add_contact("POOL_1", extRef="user-1", email="ada@example.com")
    errors = run(client, delivery("m-1"), delivery("m-2"), delivery("m-3", user_id="user-2"))
    assert set(errors) == {"sqs-m-1", "sqs-m-2"}
    for error in errors.values():
        assert isinstance(error, PermanentError)
        assert error.code == "directory_lookup_error"
        assert "2 contacts" in error.message and "POOL_1" in error.message
    assert client.count("create_contact") == 1   # only for user-2
    assert set(transactions_of(client)) == {"m-3"}


def test_a_search_failure_fails_the_messages_that_needed_it():
    client = FakeQualtrics()
    client.fail_next["search"] = RetryableError("qualtrics_server_error", "Qualtrics answered 503", status=503)
    errors = run(client, delivery("m-1"), delivery("m-2"), delivery("m-3", contact_id="CID_KNOWN"))
    assert set(errors) == {"sqs-m-1", "sqs-m-2"}
    assert all(e.code == "qualtrics_server_error" and e.retryable for e in errors.values())
    assert set(transactions_of(client)) == {"m-3"}


def test_a_contact_creation_failure_is_not_cached():
    client = FakeQualtrics()
    cache = ContactCache()
    client.fail_next["create_contact"] = RetryableError("network_error", "down")
    assert set(run(client, delivery("m-1"), cache=cache)) == {"sqs-m-1"}
    assert run(client, delivery("m-1"), cache=cache) == {}
    assert client.count("search") == 2


# --- the transactions call ------------------------------------------------------------------------

def test_one_call_per_directory_with_one_key_per_message():
    client = FakeQualtrics()
    batch = [delivery("m-1"), delivery("m-2"), delivery("m-3", directory="POOL_2"), delivery("m-4")]
    assert run(client, *batch) == {}
    posted = client.posted()
    assert [(directory, len(body)) for directory, body in posted] == [("POOL_1", 3), ("POOL_2", 1)]
    keys = [key for _, body in posted for key in body]
    assert len(set(keys)) == 4
    assert keys == [transaction_key(d) for d in (batch[0], batch[1], batch[3], batch[2])]


def test_a_transaction_has_segments_fields_and_our_marker():
    client = FakeQualtrics()
    d = delivery("m-1", contact_id="CID_1", data={"orderId": "o-1", "total": 12.5, "items": [{"sku": "A"}],
                                                  "coupon": None})
    run(client, d)
    [(_, body)] = client.posted()
    assert body == {transaction_key(d): {
        "contactId": "CID_1",
        "mailingListId": "CG_1",
        "data": {"orderId": "o-1", "total": 12.5, "items": '[{"sku":"A"}]', MARKER_FIELD: "m-1",
                 DELIVERY_KEY_FIELD: transaction_key(d)},
        "transactionDate": "2024-03-04 05:06:07",
    }}
    assert list(body[transaction_key(d)]) == ["contactId", "mailingListId", "data", "transactionDate"]


def test_keys_are_deterministic_and_distinct():
    assert transaction_key(delivery("m-1")) == transaction_key(delivery("m-1"))
    assert transaction_key(delivery("m-1")) != transaction_key(delivery("m-2"))
    assert transaction_key(delivery("m-1")) != transaction_key(delivery("m-1", subscription="Other"))
    assert transaction_key(delivery("m-1")).isalnum()


def test_a_retried_call_carries_the_same_key():
    client = FakeQualtrics()
    client.fail_next["create_transactions"] = RetryableError("qualtrics_timeout", "timeout")
    assert set(run(client, delivery("m-1"))) == {"sqs-m-1"}
    run(client, delivery("m-1"))
    [(_, first), (_, second)] = client.posted()
    assert list(first) == list(second)


def test_more_than_a_call_can_hold_is_split():
    client = FakeQualtrics()
    batch = [delivery(f"m-{i}", contact_id="CID_1") for i in range(MAX_PER_CALL + 1)]
    assert run(client, *batch) == {}
    assert [len(body) for _, body in client.posted()] == [MAX_PER_CALL, 1]


def test_an_unprocessed_entry_fails_only_its_message():
    client = FakeQualtrics()
    client.reject["m-2"] = {"error": "INVALID_DATA", "errorMessage": "transactionDate is in the future"}
    errors = run(client, delivery("m-1", contact_id="CID_1"), delivery("m-2", contact_id="CID_1"),
                 delivery("m-3", contact_id="CID_1"))
    assert set(errors) == {"sqs-m-2"}
    error = errors["sqs-m-2"]
    assert isinstance(error, PermanentError) and error.code == "transaction_unprocessed"
    assert error.message == "transaction unprocessed: INVALID_DATA: transactionDate is in the future"
    assert error.request_id == "req-tx"
    assert set(transactions_of(client)) == {"m-1", "m-3"}


def test_a_key_answered_neither_created_nor_unprocessed_is_retryable():
    client = FakeQualtrics()
    d = delivery("m-1", contact_id="CID_1")
    client.forget_keys.add(transaction_key(d))
    error = run(client, d)["sqs-m-1"]
    assert isinstance(error, RetryableError) and error.code == "qualtrics_bad_response"


def test_a_failed_call_fails_its_directory_only():
    client = FakeQualtrics()
    client.fail_next["create_transactions"] = PermanentError("qualtrics_rejected", "Qualtrics answered 400",
                                                             status=400)
    errors = run(client, delivery("m-1", contact_id="C"), delivery("m-2", contact_id="C"),
                 delivery("m-3", contact_id="C", directory="POOL_2"))
    assert set(errors) == {"sqs-m-1", "sqs-m-2"}
    assert set(transactions_of(client)) == {"m-3"}


def test_transaction_date_falls_back_to_the_received_time():
    client = FakeQualtrics()
    run(client, delivery("m-1", contact_id="C", timestamp=None, received_at="2024-03-04T09:00:00.500Z"))
    assert transactions_of(client)["m-1"]["transactionDate"] == "2024-03-04 09:00:00"


# --- the contact cache ----------------------------------------------------------------------------

def test_the_cache_serves_later_executions():
    client = FakeQualtrics()
    cache = ContactCache()
    run(client, delivery("m-1"), cache=cache)
    run(client, delivery("m-2"), cache=cache)
    assert client.count("search") == 1 and client.count("create_contact") == 1
    recorded = transactions_of(client)
    assert recorded["m-1"]["contactId"] == recorded["m-2"]["contactId"]
    assert cache.hits == 1


def test_the_cache_is_per_directory_and_identifiers():
    client = FakeQualtrics()
    cache = ContactCache()
    run(client, delivery("m-1"), cache=cache)
    run(client, delivery("m-2", directory="POOL_2"), delivery("m-3", email="other@example.com"), cache=cache)
    assert client.count("search") == 3


def test_a_stale_cached_contact_is_dropped_and_retried():
    client = FakeQualtrics()
    cache = ContactCache()
    run(client, delivery("m-1"), cache=cache)
    [old] = client.contacts["POOL_1"]
    client.gone_contacts.add(old["id"])      # merged away in Qualtrics since
    client.contacts["POOL_1"].clear()
    errors = run(client, delivery("m-2"), delivery("m-3", contact_id=old["id"]), cache=cache)
    assert isinstance(errors["sqs-m-2"], RetryableError) and errors["sqs-m-2"].code == "stale_contact"
    # a contact id the event itself named is not ours to second-guess: permanent
    assert isinstance(errors["sqs-m-3"], PermanentError) and errors["sqs-m-3"].code == "transaction_unprocessed"
    assert run(client, delivery("m-2"), cache=cache) == {}   # the retry looks the contact up again
    assert client.count("search") == 2
    assert transactions_of(client)["m-2"]["contactId"] != old["id"]


def test_contact_cache_expires_and_is_bounded():
    now = [0.0]
    cache = ContactCache(max_entries=2, ttl_seconds=10, clock=lambda: now[0])
    cache.put(("P", "a"), "CID_A")
    assert cache.get(("P", "a")) == "CID_A"
    now[0] = 11
    assert cache.get(("P", "a")) is None
    cache.put(("P", "a"), "CID_A")
    cache.put(("P", "b"), "CID_B")
    cache.get(("P", "a"))                      # a is now the most recently used
    cache.put(("P", "c"), "CID_C")
    assert cache.get(("P", "b")) is None and cache.get(("P", "a")) == "CID_A"
    cache.drop_contact("CID_A")
    assert cache.get(("P", "a")) is None and cache.get(("P", "c")) == "CID_C"


# --- recovering deliveries ------------------------------------------------------------------------

def test_a_recovering_delivery_already_recorded_is_not_posted_again():
    client = FakeQualtrics()
    run(client, delivery("m-1", contact_id="CID_1"))           # landed, but the worker never heard back
    assert run(client, delivery("m-1", contact_id="CID_1", recovering=True)) == {}
    assert len(client.posted()) == 1
    assert client.count("list_transactions") == 1
    assert len(client.transactions["POOL_1"]) == 1


def test_a_recovering_delivery_not_recorded_is_posted():
    client = FakeQualtrics()
    run(client, delivery("m-0", contact_id="CID_1"))           # another transaction of the same contact
    assert run(client, delivery("m-1", contact_id="CID_1", recovering=True)) == {}
    assert set(transactions_of(client)) == {"m-0", "m-1"}


def test_recovering_deliveries_of_one_contact_list_its_transactions_once():
    client = FakeQualtrics()
    run(client, delivery("m-1", contact_id="CID_1"))
    run(client, delivery("m-1", contact_id="CID_1", recovering=True),
        delivery("m-2", contact_id="CID_1", recovering=True), delivery("m-3", contact_id="CID_1"))
    assert client.count("list_transactions") == 1
    assert sorted(t["data"][MARKER_FIELD] for t in client.transactions["POOL_1"]) == ["m-1", "m-2", "m-3"]


def test_a_failed_check_fails_the_recovering_delivery_only():
    client = FakeQualtrics()
    client.fail_next["list_transactions"] = RetryableError("network_error", "down")
    errors = run(client, delivery("m-1", contact_id="C", recovering=True), delivery("m-2", contact_id="C"))
    assert set(errors) == {"sqs-m-1"} and errors["sqs-m-1"].retryable
    assert set(transactions_of(client)) == {"m-2"}


# --- the recovery marker names the idempotency key --------------------------------------------------

def test_another_subscriptions_transaction_for_the_same_event_is_no_proof():
    # Subscription A's transaction landed; B's attempt for the same event and contact was lost in a timeout.
    client = FakeQualtrics()
    run(client, delivery("m-1", contact_id="CID_1", subscription="A"))
    assert run(client, delivery("m-1", contact_id="CID_1", subscription="B", recovering=True)) == {}
    landed = [t["data"][DELIVERY_KEY_FIELD] for t in client.transactions["POOL_1"]]
    assert len(landed) == 2 and len(set(landed)) == 2   # B's was posted, not hidden by A's


def old_style_transaction(client: FakeQualtrics, message_id: str, contact_id: str) -> None:
    """A transaction written before segmentDeliveryKey existed: only segmentMessageId in its data."""
    client.transactions.setdefault("POOL_1", []).append(
        {"key": "old", "contactId": contact_id, "data": {MARKER_FIELD: message_id}})


def test_an_old_marker_is_trusted_only_when_one_subscription_could_have_written_it():
    trusted = FakeQualtrics()
    old_style_transaction(trusted, "m-1", "CID_1")
    executor = TransactionExecutor(trusted, legacy_marker_trusted=True)
    assert executor.execute([delivery("m-1", contact_id="CID_1", recovering=True)]) == {}
    assert trusted.posted() == []

    untrusted = FakeQualtrics()
    old_style_transaction(untrusted, "m-1", "CID_1")
    assert run(untrusted, delivery("m-1", contact_id="CID_1", recovering=True)) == {}
    assert len(untrusted.posted()) == 1


def test_a_new_marker_of_another_key_does_not_count_as_an_old_one():
    client = FakeQualtrics()
    run(client, delivery("m-1", contact_id="CID_1", subscription="A"))   # has both fields
    executor = TransactionExecutor(client, legacy_marker_trusted=True)
    executor.execute([delivery("m-1", contact_id="CID_1", subscription="B", recovering=True)])
    assert len(client.posted()) == 2


def test_a_check_that_finds_it_absent_says_so():
    client = FakeQualtrics()
    d = delivery("m-1", contact_id="CID_1", recovering=True)
    run(client, d)
    assert d.checked_absent and d.sent


# --- progress: per-call completion and the time budget ----------------------------------------------

def test_each_call_reports_its_created_messages_before_the_next_call():
    client = FakeQualtrics()
    batch = [delivery(f"m-{i}", contact_id="CID_1", directory=f"POOL_{i}") for i in range(3)]
    seen: list[tuple[str, int]] = []
    progress = Progress(lambda d: seen.append((d.message.message_id, len(client.posted()))))
    assert TransactionExecutor(client).execute(batch, progress) == {}
    assert seen == [("m-0", 1), ("m-1", 2), ("m-2", 3)]


def test_a_recovering_message_found_is_reported_delivered():
    client = FakeQualtrics()
    run(client, delivery("m-1", contact_id="CID_1"))
    progress = Progress()
    assert TransactionExecutor(client).execute([delivery("m-1", contact_id="CID_1", recovering=True)],
                                               progress) == {}
    assert progress.delivered_ids == {"sqs-m-1"}


def test_no_call_starts_without_time_for_it():
    client = FakeQualtrics()
    left = iter([5.0, 5.0])   # the first call of an invocation always starts; then no time for another
    batch = [delivery(f"m-{i}", contact_id="CID_1", directory=f"POOL_{i}") for i in range(3)]
    progress = Progress(remaining_seconds=lambda: next(left), call_seconds=16)
    errors = TransactionExecutor(client).execute(batch, progress)
    assert errors == {} and progress.delivered_ids == {"sqs-m-0"}
    assert len(client.posted()) == 1   # m-1 and m-2 left unreported: the worker defers them


def test_a_search_that_cannot_finish_in_time_is_not_started():
    client = FakeQualtrics()
    progress = Progress(remaining_seconds=lambda: 1.0, call_seconds=16)
    batch = [delivery("m-1", email="a@example.com"), delivery("m-2", email="b@example.com")]
    assert TransactionExecutor(client).execute(batch, progress) == {}
    assert client.count("search") == 1 and client.posted() == []
    assert progress.delivered_ids == set()   # both left unreported: the worker hands them back


# --- unexpected exceptions fail only their own message -----------------------------------------------

def test_an_unexpected_exception_building_one_transaction_fails_only_it():
    client = FakeQualtrics()
    good, bad = delivery("m-1", contact_id="CID_1"), delivery("m-2", contact_id="CID_1")
    bad.payload = bad.payload.model_copy(update={"transactionData": "not a dict"})   # a bug's shape
    errors = run(client, good, bad)
    assert set(errors) == {"sqs-m-2"} and errors["sqs-m-2"].code == "internal_error"
    assert set(transactions_of(client)) == {"m-1"}


def test_an_unexpected_exception_in_the_call_fails_its_messages_as_internal_errors():
    client = FakeQualtrics()
    client.fail_next["create_transactions"] = TypeError("bad answer")
    d = delivery("m-1", contact_id="CID_1")
    errors = run(client, d)
    assert errors["sqs-m-1"].code == "internal_error" and "TypeError" in errors["sqs-m-1"].message
    assert d.sent   # it may have landed: the worker keeps the key uncertain


def test_a_message_id_with_a_lone_surrogate_has_a_transaction_key():
    """A hand-made or redriven message may carry one (the ingest refuses them); its key must not raise."""
    odd, plain = delivery("m-\ud800"), delivery("m-1")
    assert transaction_key(odd) == transaction_key(delivery("m-\ud800")) != transaction_key(plain)
    assert transaction_key(plain).startswith("seg") and len(transaction_key(odd)) == 27
