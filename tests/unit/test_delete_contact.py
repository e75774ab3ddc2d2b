"""deleteContact (delivery/executors_delete.py), driven through the worker core against the Qualtrics sandbox.

Real parts: the worker core, the in-memory idempotency store, the Qualtrics client over HTTP, and the sandbox
(local/sandbox/qualtrics_sandbox.py) on a free port in this process. Only the SQS edges (dead-letter queue,
visibility) are small recording fakes, as in test_worker.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import requests
import requests.adapters
from hypothesis import given, settings
from hypothesis import strategies as st
from segment_qualtrics.adapters.qualtrics import QualtricsClient
from segment_qualtrics.delivery.executors_delete import MAX_CONTACTS_PER_DELETE, DeleteContactExecutor
from segment_qualtrics.delivery.idempotency import MemoryIdempotencyStore
from segment_qualtrics.delivery.transactions import ContactCache, TransactionExecutor
from segment_qualtrics.delivery.worker import QueuedWork, RetryPolicy, Worker
from segment_qualtrics.destination.actions import ACTIONS
from segment_qualtrics.destination.envelope import QueueMessage
from segment_qualtrics.destination.errors import PermanentError
from segment_qualtrics.destination.subscriptions import Subscription, parse_subscriptions
from segment_qualtrics.runtime.observability import Metric, logger, metrics
from segment_qualtrics.runtime.worker_app import WorkerObserver
from segment_qualtrics.segment.fql import compile_trigger

from local.sandbox.qualtrics_sandbox import QualtricsSandbox
from local.sandbox.tests.sandbox_api import own_sandbox

TOKEN = "delete-contact-test-token"
POOL = "POOL_SANDBOX"
DELETE_CONTACT = ACTIONS["deleteContact"]
PLAIN = "POOL_PLAIN"          # no deduplication: several contacts may share an extRef
ROOT = Path(__file__).resolve().parents[2]


def subscription(**mapping: Any) -> Subscription:
    """A deleteContact subscription as the subscriptions file would give it (defaults merged in)."""
    effective = {**DELETE_CONTACT.default_mapping, "directoryId": POOL, **mapping}
    return Subscription("Delete contact", True, DELETE_CONTACT, compile_trigger('type = "delete"'),
                        {k: v for k, v in effective.items() if v is not None})


class DeadLetters:
    def __init__(self) -> None:
        self.sent: list[dict[str, str]] = []

    def send(self, body: str, attributes: dict[str, dict[str, str]]) -> None:
        self.sent.append({k: v["StringValue"] for k, v in attributes.items()})


class Visibility:
    def __init__(self) -> None:
        self.delays: list[int] = []

    def delay(self, receipt_handle: str, seconds: int) -> None:
        self.delays.append(seconds)


@pytest.fixture(scope="module")
def server() -> Iterator[QualtricsSandbox]:
    yield from own_sandbox(TOKEN)


class Sandbox:
    """Admin calls on the sandbox, and what it saw."""

    def __init__(self, server: QualtricsSandbox) -> None:
        self.url = server.base_url

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = requests.request(method, self.url + "/_sandbox" + path, timeout=10, **kwargs)
        answer.raise_for_status()
        return answer.json()

    def add(self, directory: str = POOL, **fields: str) -> str:
        contact_id = fields.pop("contactId", None) or f"CID_{len(self.contacts(directory)) + 1}x{directory[-1]}"
        self.admin("POST", "/contacts", json={"directoryId": directory, "contactId": contact_id, **fields})
        return contact_id

    def contacts(self, directory: str = POOL) -> list[dict[str, Any]]:
        return self.admin("GET", "/state")["directories"][directory]["contacts"]

    def requests(self, method: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.admin("GET", "/requests")["requests"] if method in (None, r["method"])]

    def fault(self, **spec: Any) -> None:
        self.admin("POST", "/faults", json=spec)


@pytest.fixture
def sandbox(server: QualtricsSandbox) -> Sandbox:
    server.reset()
    box = Sandbox(server)
    box.admin("POST", "/directories", json={"directoryId": PLAIN, "mailingLists": ["CG_PLAIN"]})
    return box


class Run:
    """One deleteContact worker, as a worker function would wire it."""

    def __init__(self, sandbox: Sandbox, sub: Subscription | None = None, **worker: Any) -> None:
        self.calls: list[tuple[str, int | None]] = []
        self.client = QualtricsClient.with_token(TOKEN, base_url=sandbox.url,
                                                 on_call=lambda op, status, _: self.calls.append((op, status)))
        self.executor = DeleteContactExecutor(self.client)
        self.dead_letters, self.visibility = DeadLetters(), Visibility()
        self.store = MemoryIdempotencyStore()
        self.outcomes: list[tuple[str, QueuedWork]] = []
        sub = sub or subscription()
        self.worker = Worker(action="deleteContact", subscriptions={sub.name: sub}, executor=self.executor,
                             store=self.store, dead_letters=self.dead_letters, visibility=self.visibility,
                             retry=RetryPolicy(max_attempts=3, jitter=lambda: 0.0),
                             on_outcome=lambda outcome, d, error: self.outcomes.append((outcome, d)), **worker)

    def deliver(self, *events: dict[str, Any], attempt: int = 1) -> list[QueuedWork]:
        deliveries = [QueuedWork(f"sqs-{e['messageId']}", "rh", message(e), attempt) for e in events]
        self.report = self.worker.process(deliveries)
        return deliveries


def message(event: dict[str, Any]) -> str:
    return QueueMessage("deleteContact", "Delete contact", event["messageId"], "2026-11-29T10:00:00.250Z",
                        event).to_json()


def delete_event(message_id: str = "del-1", user_id: str | None = "user-1", **extra: Any) -> dict[str, Any]:
    """What Segment sends for a deletion request (its `delete` call)."""
    event: dict[str, Any] = {"type": "delete", "messageId": message_id, "context": {"library": {"name": "segment"}},
                             "timestamp": "2026-11-29T09:59:58Z", **extra}
    if user_id is not None:
        event["userId"] = user_id
    return event


def reason(run: Run) -> dict[str, str]:
    [attributes] = run.dead_letters.sent
    return attributes


# --- the happy paths ----------------------------------------------------------------------------

def test_a_segment_delete_deletes_the_contact_found_by_user_id(sandbox):
    keep = sandbox.add(extRef="user-2", email="grace@example.com")
    gone = sandbox.add(extRef="user-1", email="ada@example.com")
    run = Run(sandbox)
    [delivery] = run.deliver(delete_event())
    assert [d.sqs_message_id for d in run.report.delivered] == ["sqs-del-1"]
    assert [c["contactId"] for c in sandbox.contacts()] == [keep]
    [search] = sandbox.requests("POST")
    assert search["body"] == {"filter": {"filterType": "extRef", "comparison": "eq", "value": "user-1"}}
    [deleted] = sandbox.requests("DELETE")
    assert deleted["path"] == f"/API/v3/directories/{POOL}/contacts/{gone}" and deleted["status"] == 200
    assert delivery.detail["deleteResult"] == "deleted" and delivery.detail["contactsDeleted"] == 1


def test_identifiers_are_matched_together(sandbox):
    """extRef and email both set: only a contact with both is deleted (the transaction lookup's AND)."""
    same_user_other_email = sandbox.add(PLAIN, extRef="user-1", email="other@example.com")
    both = sandbox.add(PLAIN, extRef="user-1", email="ada@example.com")
    run = Run(sandbox, subscription(directoryId=PLAIN, email={"@path": "$.context.traits.email"}))
    [delivery] = run.deliver(delete_event(context={"traits": {"email": "ADA@example.com "}}))
    assert run.report.delivered
    assert [c["contactId"] for c in sandbox.contacts(PLAIN)] == [same_user_other_email]
    [search] = sandbox.requests("POST")
    assert search["body"]["filter"]["conjunction"] == "and"
    assert [r["path"].rsplit("/", 1)[1] for r in sandbox.requests("DELETE")] == [both]
    assert delivery.detail["contactsDeleted"] == 1


def test_every_match_is_deleted_up_to_the_limit(sandbox):
    ids = [sandbox.add(PLAIN, extRef="user-1") for _ in range(MAX_CONTACTS_PER_DELETE)]
    run = Run(sandbox, subscription(directoryId=PLAIN))
    [delivery] = run.deliver(delete_event())
    assert run.report.delivered and sandbox.contacts(PLAIN) == []
    assert sorted(r["path"].rsplit("/", 1)[1] for r in sandbox.requests("DELETE")) == sorted(ids)
    assert delivery.detail["contactsDeleted"] == MAX_CONTACTS_PER_DELETE


def test_more_matches_than_the_limit_is_ambiguous_and_deletes_nothing(sandbox):
    for _ in range(MAX_CONTACTS_PER_DELETE + 1):
        sandbox.add(PLAIN, extRef="user-1")
    run = Run(sandbox, subscription(directoryId=PLAIN))
    run.deliver(delete_event())
    assert reason(run)["errorCode"] == "ambiguous_contact" and reason(run)["errorRetryable"] == "false"
    assert f"at most {MAX_CONTACTS_PER_DELETE}" in reason(run)["errorMessage"]
    assert sandbox.requests("DELETE") == [] and len(sandbox.contacts(PLAIN)) == MAX_CONTACTS_PER_DELETE + 1


def test_no_match_is_a_success_with_outcome_not_found(sandbox):
    sandbox.add(extRef="someone-else")
    run = Run(sandbox)
    [delivery] = run.deliver(delete_event())
    assert run.report.delivered and not run.dead_letters.sent
    assert delivery.detail["deleteResult"] == "not_found" and delivery.detail["contactsDeleted"] == 0
    assert sandbox.requests("DELETE") == [] and len(sandbox.contacts()) == 1


def test_a_contact_id_is_deleted_without_a_search(sandbox):
    sandbox.add(contactId="CID_KNOWN1", extRef="not-the-user-id")
    run = Run(sandbox, subscription(contactId={"@path": "$.context.traits.qualtricsContactId"}))
    [delivery] = run.deliver(delete_event(context={"traits": {"qualtricsContactId": "CID_KNOWN1"}}))
    assert run.report.delivered and sandbox.contacts() == []
    assert [r["method"] for r in sandbox.requests()] == ["DELETE"]
    assert delivery.detail["deleteResult"] == "deleted"


def test_a_contact_id_already_gone_is_already_deleted(sandbox):
    """404 on the DELETE: one search proves the directory exists, so the 404 was the contact's."""
    run = Run(sandbox, subscription(contactId="CID_GONE1"))
    [delivery] = run.deliver(delete_event())
    assert run.report.delivered and delivery.detail["deleteResult"] == "already_deleted"
    assert [(r["method"], r["status"]) for r in sandbox.requests()] == [("DELETE", 404), ("POST", 200)]


def test_a_contact_id_in_an_unknown_directory_is_dead_lettered_not_reported_deleted(sandbox):
    run = Run(sandbox, subscription(directoryId="POOL_NOPE", contactId="CID_GONE1"))
    run.deliver(delete_event())
    assert not run.report.delivered
    assert reason(run)["errorCode"] == "qualtrics_rejected" and reason(run)["httpStatus"] == "404"


def test_an_unknown_directory_is_dead_lettered_with_its_reason(sandbox):
    run = Run(sandbox, subscription(directoryId="POOL_NOPE"))
    run.deliver(delete_event())
    assert reason(run)["errorCode"] == "qualtrics_rejected" and "POOL_NOPE" in reason(run)["errorMessage"]


# --- invalid payloads ---------------------------------------------------------------------------

def test_no_identifier_resolving_is_an_invalid_payload_with_a_reason(sandbox):
    """An anonymous delete (no userId) and nothing else mapped: nothing can be found, so nothing is called."""
    run = Run(sandbox)
    run.deliver(delete_event(user_id=None, anonymousId="anon-1"))
    assert reason(run)["errorCode"] == "invalid_payload"
    assert "needs contactId, or at least one of extRef, email, phone" in reason(run)["errorMessage"]
    assert sandbox.requests() == []


@pytest.mark.parametrize(("field", "value"), [
    ("contactId", ".."), ("contactId", "CID_1/../../x"), ("contactId", "CID_1?x=1"), ("contactId", "POOL_1"),
    ("directoryId", ".."), ("directoryId", "POOL_1/contacts/CID_1"), ("directoryId", "POOL_" + "9" * 200),
])
def test_ids_that_would_change_the_url_are_refused_before_any_call(sandbox, field, value):
    run = Run(sandbox, subscription(**{field: {"@path": "$.context.id"}}))
    run.deliver(delete_event(context={"id": value}))
    assert reason(run)["errorCode"] == "invalid_payload" and f"'{field}'" in reason(run)["errorMessage"]
    assert sandbox.requests() == []


def test_the_client_refuses_dot_segments_in_any_path():
    """requests removes dot segments: ``contacts/..`` would be the directory itself. Refused, never sent."""
    sent = []
    client = QualtricsClient.with_token(TOKEN, base_url="http://127.0.0.1:9", on_call=lambda *a: sent.append(a))
    for directory, contact in ((POOL, ".."), (POOL, "."), ("..", "CID_1")):
        with pytest.raises(Exception) as caught:
            client.delete_contact(directory, contact)
        assert getattr(caught.value, "code", None) == "invalid_payload"
    with pytest.raises(Exception) as caught:
        client.create_contact("..", {"extRef": "x"})   # POST /API/v3/contacts: another resource
    assert getattr(caught.value, "code", None) == "invalid_payload"
    assert sent == []


class Recorder(requests.adapters.BaseAdapter):
    """A transport that records the URL requests prepared and answers 200: what would go on the wire."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def send(self, request, **kwargs):
        self.urls.append(request.url)
        response = requests.Response()
        response.status_code, response.raw = 200, io.BytesIO(b"{}")
        return response

    def close(self) -> None:
        pass


_IDS = st.one_of(st.text(max_size=20), st.text(alphabet="./?#%;a_-\u00e9\\", max_size=6))


@settings(max_examples=300, deadline=None)
@given(directory=_IDS, contact=_IDS)
def test_any_ids_make_one_delete_of_that_contact_or_none(directory, contact):
    """Whatever the ids (dots, slashes, %, ?, #, unicode), the DELETE names that directory and that contact in
    exactly two path segments, or nothing is sent."""
    recorder = Recorder()
    session = requests.Session()
    session.mount("http://", recorder)
    client = QualtricsClient.with_token(TOKEN, base_url="http://127.0.0.1:9", session=session)
    try:
        client.delete_contact(directory, contact)
    except PermanentError as exc:
        assert exc.code == "invalid_payload" and recorder.urls == []
        return
    [url] = recorder.urls
    parts = urlsplit(url)
    assert not parts.query and not parts.fragment
    segments = parts.path.split("/")
    assert segments[:4] == ["", "API", "v3", "directories"] and segments[5] == "contacts" and len(segments) == 7
    assert (unquote(segments[4]), unquote(segments[6])) == (directory, contact)


# --- retries, crashes and time --------------------------------------------------------------------

def test_a_retry_after_the_delete_landed_but_its_answer_was_lost_succeeds(sandbox):
    """Qualtrics deleted, then the answer was a 500: retried; the retry finds nothing left: not_found."""
    sandbox.add(extRef="user-1")
    sandbox.fault(pathPattern="/contacts/CID_", method="DELETE", status=500, when="after")
    run = Run(sandbox)
    run.deliver(delete_event())
    [(_, error, _)] = run.report.retried
    assert error.code == "qualtrics_server_error" and sandbox.contacts() == []
    [again] = run.deliver(delete_event(), attempt=2)
    assert run.report.delivered and again.detail["deleteResult"] == "not_found"


def test_a_retry_whose_contact_went_between_search_and_delete_succeeds(sandbox):
    """The DELETE answers 404 (deleted meanwhile, e.g. by a crashed attempt's late call): already deleted."""
    gone = sandbox.add(extRef="user-1")
    sandbox.fault(pathPattern=f"/contacts/{gone}$", method="DELETE", status=404)
    run = Run(sandbox)
    [delivery] = run.deliver(delete_event())
    assert run.report.delivered and delivery.detail["deleteResult"] == "already_deleted"
    assert delivery.detail["contactsDeleted"] == 0


def test_out_of_time_part_way_defers_and_the_next_attempt_deletes_the_rest(sandbox):
    for _ in range(3):
        sandbox.add(PLAIN, extRef="user-1")
    box: list[Run] = []
    # Time enough for two calls (the search and one DELETE), then none: the message is handed back.
    run = Run(sandbox, subscription(directoryId=PLAIN), call_seconds=10.0, invocation_seconds=100.0,
              remaining_seconds=lambda: 100.0 if len(box[0].calls) < 2 else 0.0)
    box.append(run)
    run.deliver(delete_event())
    assert [d.sqs_message_id for d in run.report.deferred] == ["sqs-del-1"] and not run.dead_letters.sent
    assert len(sandbox.contacts(PLAIN)) == 2
    run.worker.remaining_seconds = None
    [again] = run.deliver(delete_event(), attempt=2)
    assert run.report.delivered and sandbox.contacts(PLAIN) == []
    assert again.detail["contactsDeleted"] == 2


def test_a_redelivered_message_that_was_done_is_a_duplicate(sandbox):
    sandbox.add(extRef="user-1")
    run = Run(sandbox)
    run.deliver(delete_event())
    run.deliver(delete_event(), attempt=2)
    assert [d.sqs_message_id for d in run.report.duplicates] == ["sqs-del-1"]
    assert len(sandbox.requests("DELETE")) == 1


# --- caches, token, logs and metrics ------------------------------------------------------------

def test_a_deleted_contact_leaves_the_warm_contact_caches_of_the_process(sandbox):
    """A transaction executor cached the contact; after the delete its next transaction looks it up again
    (and creates the contact anew) instead of posting to a deleted contact id."""
    transactions = ACTIONS["upsertContactTransaction"]
    [tx_sub] = parse_subscriptions({"subscriptions": [{
        "name": "Transactions", "actionSlug": transactions.slug, "trigger": 'type = "track"',
        "mapping": {"directoryId": POOL, "mailingListId": "CG_SANDBOX"}}]}, environ={})
    client = QualtricsClient.with_token(TOKEN, base_url=sandbox.url)
    cache = ContactCache()
    tx_worker = Worker(action=transactions.slug, subscriptions={tx_sub.name: tx_sub},
                       executor=TransactionExecutor(client, cache), store=MemoryIdempotencyStore(),
                       dead_letters=DeadLetters(), visibility=Visibility())

    def transaction(message_id: str) -> QueuedWork:
        event = {"type": "track", "event": "Order", "messageId": message_id, "userId": "user-1",
                 "properties": {}, "timestamp": "2026-11-29T10:00:00Z"}
        body = QueueMessage(transactions.slug, tx_sub.name, message_id, "2026-11-29T10:00:00Z", event).to_json()
        return QueuedWork(f"sqs-{message_id}", "rh", body, 1)

    assert tx_worker.process([transaction("tx-1")]).delivered
    [first] = sandbox.contacts()
    assert cache.get((POOL, (("extRef", "user-1"),))) == first["contactId"]
    Run(sandbox).deliver(delete_event())
    assert sandbox.contacts() == [] and cache.get((POOL, (("extRef", "user-1"),))) is None
    assert tx_worker.process([transaction("tx-2")]).delivered
    [second] = sandbox.contacts()
    assert second["contactId"] != first["contactId"]


def test_the_delete_goes_through_the_clients_one_send_path_with_the_token(sandbox):
    sandbox.add(extRef="user-1")
    run = Run(sandbox)
    run.deliver(delete_event())
    assert run.calls == [("search_contacts", 200), ("delete_contact", 200)]   # on_call fires only in _send
    [deleted] = sandbox.requests("DELETE")
    assert deleted["headers"]["X-API-TOKEN"] == "***" and deleted["headers"]["User-Agent"].startswith("segment-")


@pytest.fixture
def log_lines(capsys):
    """The logger's lines, as the functions write them (its own handler took sys.stdout at import)."""
    class Stdout:
        def write(self, text: str) -> None:
            sys.stdout.write(text)

        def flush(self) -> None:
            sys.stdout.flush()

    handler = logging.StreamHandler(Stdout())
    handler.setFormatter(logger.registered_formatter)
    logger.addHandler(handler)
    yield lambda: [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    logger.removeHandler(handler)
    metrics.clear_metrics()


def test_the_outcome_is_logged_with_hashed_identifiers_and_counted(sandbox, log_lines):
    sandbox.add(PLAIN, extRef="user-1", email="ada@example.com")
    sandbox.add(PLAIN, extRef="user-1", email="ada@example.com")
    observer = WorkerObserver("deleteContact")
    run = Run(sandbox, subscription(directoryId=PLAIN, email={"@path": "$.context.traits.email"}))
    run.worker.on_outcome = observer.outcome
    metrics.clear_metrics()
    run.deliver(delete_event(context={"traits": {"email": "ada@example.com"}}))
    [line] = [line for line in log_lines() if line.get("outcome") == "delivered"]
    assert line["deleteResult"] == "deleted" and line["contactsDeleted"] == 2
    sha = hashlib.sha256(b"user-1").hexdigest()[:16]
    assert line["identifierHashes"] == [f"extRef:{sha}", f"email:{hashlib.sha256(b'ada@example.com').hexdigest()[:16]}"]
    text = json.dumps(line)
    assert "user-1" not in text and "ada@" not in text and "CID_" not in text
    assert metrics.metric_set[Metric.CONTACTS_DELETED.value]["Value"] == [2.0]


def test_deletions_before_a_failure_are_counted_and_the_retry_finishes(sandbox, log_lines):
    first, second = sandbox.add(PLAIN, extRef="user-1"), sandbox.add(PLAIN, extRef="user-1")
    sandbox.fault(pathPattern=f"/contacts/{second}$", method="DELETE", status=503)
    observer = WorkerObserver("deleteContact")
    run = Run(sandbox, subscription(directoryId=PLAIN))
    run.worker.on_outcome = observer.outcome
    metrics.clear_metrics()
    run.deliver(delete_event())
    [line] = [line for line in log_lines() if line.get("outcome") == "retried"]
    assert line["contactsDeleted"] == 1 and line["errorCode"] == "qualtrics_server_error"
    assert metrics.metric_set[Metric.CONTACTS_DELETED.value]["Value"] == [1.0]
    assert [c["contactId"] for c in sandbox.contacts(PLAIN)] == [second]
    [again] = run.deliver(delete_event(), attempt=2)
    assert run.report.delivered and again.detail["contactsDeleted"] == 1 and sandbox.contacts(PLAIN) == []
    assert first != second


@pytest.mark.parametrize("answer", [
    {"elements": [{"id": "../x"}]}, {"elements": [{"id": 12}]}, {"elements": [{"name": "no id"}]},
])
def test_a_search_answer_without_usable_ids_deletes_nothing(sandbox, answer):
    sandbox.add(extRef="user-1")
    sandbox.fault(pathPattern="/contacts/search$", status=200,
                  body={"result": answer, "meta": {"httpStatus": "200 - OK", "requestId": "r"}})
    run = Run(sandbox)
    run.deliver(delete_event())
    [(_, error, _)] = run.report.retried
    assert error.code == "qualtrics_bad_response" and sandbox.requests("DELETE") == []


def test_a_search_answer_naming_someone_else_deletes_nothing(sandbox):
    """A search that ignored its filter (a proxy, an API change) must not turn into deleting other people."""
    other = sandbox.add(extRef="user-2")
    sandbox.fault(pathPattern="/contacts/search$", status=200, body={
        "result": {"elements": [{"id": other, "externalDataReference": "user-2"}]},
        "meta": {"httpStatus": "200 - OK", "requestId": "r"}})
    run = Run(sandbox)
    run.deliver(delete_event())
    assert reason(run)["errorCode"] == "directory_lookup_error" and sandbox.requests("DELETE") == []
    assert len(sandbox.contacts()) == 1


def test_a_not_found_is_logged_and_counts_no_deletion(sandbox, log_lines):
    observer = WorkerObserver("deleteContact")
    run = Run(sandbox)
    run.worker.on_outcome = observer.outcome
    metrics.clear_metrics()
    run.deliver(delete_event())
    [line] = [line for line in log_lines() if line.get("outcome") == "delivered"]
    assert line["deleteResult"] == "not_found" and line["contactsDeleted"] == 0
    assert Metric.CONTACTS_DELETED.value not in metrics.metric_set


# --- the samples --------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "result"), [("delete.json", "deleted"), ("delete_unknown_user.json", "not_found")])
def test_the_events_samples_deliver(sandbox, name, result):
    """events/delete_contact/*.json (SQS events, as the worker function receives them), under the packaged
    subscription (directoryId from QUALTRICS_DIRECTORY_ID: the sandbox's directory)."""
    sandbox.add(extRef="user-1001")
    records = json.loads((ROOT / "events" / "delete_contact" / name).read_text())["Records"]
    run = Run(sandbox)
    deliveries = [QueuedWork.from_sqs_record(r) for r in records]
    report = run.worker.process(deliveries)
    assert len(report.delivered) == len(records) == 1 and not report.dead_lettered
    assert deliveries[0].detail["deleteResult"] == result
    assert len(sandbox.contacts()) == (0 if result == "deleted" else 1)


# --- the ingest side ----------------------------------------------------------------------------

def test_the_ingest_accepts_and_routes_segments_delete_call():
    """Segment's `delete` (the ingest sample events/ingest/delete.json) is a valid event, matched by the
    default trigger and queued for deleteContact; the track alternative matches its own event only."""
    from segment_qualtrics.ingest.core import IngestRequest, route
    from segment_qualtrics.segment.events import split_body, validate_event

    sample = json.loads((ROOT / "events" / "ingest" / "delete.json").read_text())
    [raw] = split_body(IngestRequest.from_http_api_event(sample).body)
    event = validate_event(raw, from_json=True)
    sub = subscription()
    assert DELETE_CONTACT.default_trigger == 'type = "delete"' and sub.trigger.matches(event)
    [queued] = route(event, [sub], "2026-11-29T10:00:02.200Z")
    assert (queued.action, queued.subscription, queued.message_id) == ("deleteContact", "Delete contact",
                                                                       "sample-delete-1")
    payload = DELETE_CONTACT.build_payload(sub.mapping, queued.event)
    assert payload.lookup_identifiers() == {"extRef": "user-1001"}
    track = compile_trigger('type = "track" and event = "Account Deleted"')
    assert not track.matches(event)
    assert track.matches(validate_event({"type": "track", "event": "Account Deleted", "userId": "user-1001",
                                         "messageId": "m-1"}))
