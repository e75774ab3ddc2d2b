"""The dry run (preview.py): triggers and why, payloads or their errors, the exact Qualtrics requests."""

from __future__ import annotations

import base64
import json
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest
from segment_qualtrics.delivery.outcomes import Outcome
from segment_qualtrics.delivery.transactions import transaction_key
from segment_qualtrics.delivery.worker import QueuedWork
from segment_qualtrics.destination.errors import DestinationError
from segment_qualtrics.destination.subscriptions import parse_subscriptions
from segment_qualtrics.ingest.core import route
from segment_qualtrics.tools.preview import (
    CONTACT_PLACEHOLDER,
    MASKED_TOKEN,
    TOKEN_PLACEHOLDER,
    PreviewInputError,
    preview,
    read_events,
    render,
)

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 29, 10, 0, 0, 250000, tzinfo=UTC)
WORKFLOW_URL = "https://iad1.qualtrics.com/inbound-event/v1/events/json/triggers?token=abc"

CONFIG = {"subscriptions": [
    {"name": "Contacts", "actionSlug": "addContactToXmd", "trigger": 'type = "identify"',
     "mapping": {"directoryId": "POOL_1"}},
    {"name": "Transactions", "actionSlug": "upsertContactTransaction",
     "trigger": 'type = "track" and event = "Transaction Created"',
     "mapping": {"directoryId": "POOL_1", "mailingListId": "CG_1", "transactionData": {"@path": "$.properties"}}},
    {"name": "Workflow", "actionSlug": "triggerXflowWorkflow", "trigger": 'type = "track"',
     "mapping": {"workflowUrl": WORKFLOW_URL}},
    {"name": "Switched off", "enabled": False, "actionSlug": "addContactToXmd", "trigger": 'type = "identify"',
     "mapping": {"directoryId": "POOL_2"}},
]}
SUBSCRIPTIONS = parse_subscriptions(CONFIG, environ={})

IDENTIFY = {"type": "identify", "messageId": "m-identify", "userId": "user-1", "anonymousId": None,
            "traits": {"email": "ada@example.com", "firstName": "Ada"}, "timestamp": "2026-11-29T09:59:58.123Z"}
TRANSACTION = {"type": "track", "event": "Transaction Created", "messageId": "m-tx", "userId": "user-1",
               "traits": {"email": "ada@example.com"}, "properties": {"orderId": "o-1", "total": 12.5},
               "timestamp": "2026-11-29T10:00:00Z"}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """A dry run opens no connection: any attempt fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("the preview tried to open a network connection")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def run(*events, subscriptions=SUBSCRIPTIONS, **options):
    return preview(list(events), subscriptions, now=NOW, **options)


def only(result, name):
    [ev] = result.events
    return next(s for s in ev.subscriptions if s.name == name)


# --- reading the input ----------------------------------------------------------------------------

def test_read_events_takes_one_event_an_array_and_a_batch():
    assert read_events(json.dumps(IDENTIFY)) == [IDENTIFY]
    assert read_events(json.dumps([IDENTIFY, TRANSACTION])) == [IDENTIFY, TRANSACTION]
    assert read_events(json.dumps({"batch": [IDENTIFY, TRANSACTION]}).encode()) == [IDENTIFY, TRANSACTION]


def test_read_events_takes_an_api_gateway_event_from_events_folder():
    api_event = json.loads((ROOT / "events" / "ingest" / "batch.json").read_text())
    events = read_events((ROOT / "events" / "ingest" / "batch.json").read_bytes())
    assert [e["messageId"] for e in events] == [e["messageId"] for e in json.loads(api_event["body"])]


def test_read_events_decodes_a_base64_api_gateway_body():
    api_event = {"headers": {}, "isBase64Encoded": True,
                 "body": base64.b64encode(json.dumps(IDENTIFY).encode()).decode()}
    assert read_events(json.dumps(api_event)) == [IDENTIFY]


@pytest.mark.parametrize(("text", "needle"), [("{nope", "not valid JSON"), ("[]", "no events"), ("3", "JSON object")])
def test_read_events_rejects_what_is_not_events(text, needle):
    with pytest.raises(PreviewInputError) as caught:
        read_events(text)
    assert needle in str(caught.value)


# --- triggers -------------------------------------------------------------------------------------

def test_each_subscription_says_whether_and_why_its_trigger_matches():
    result = run(IDENTIFY)
    contacts, transactions = only(result, "Contacts"), only(result, "Transactions")
    assert contacts.triggered and contacts.why == 'type = "identify" is true: type is "identify"'
    assert not transactions.triggered and transactions.outcome == "not triggered"
    assert transactions.why == 'type = "track" is false: type is "identify"'
    assert transactions.requests == [] and transactions.payload is None


def test_a_disabled_subscription_is_shown_but_does_nothing():
    switched_off = only(run(IDENTIFY), "Switched off")
    assert switched_off.outcome == "disabled" and switched_off.triggered
    assert switched_off.requests == [] and switched_off.payload is None


def test_an_event_the_ingest_rejects_says_why_and_goes_nowhere():
    [ev] = run({"type": "purchase", "userId": "u"}).events
    assert ev.error.startswith("the ingest rejects this event: type: unknown event type 'purchase'")
    assert ev.subscriptions == []


# --- addContactToXmd ------------------------------------------------------------------------------

def test_add_contact_shows_the_payload_and_the_exact_request():
    contacts = only(run(IDENTIFY), "Contacts")
    assert contacts.outcome == "delivered" and contacts.error is None
    assert contacts.payload == {"directoryId": "POOL_1", "extRef": "user-1", "email": "ada@example.com",
                                "firstName": "Ada", "language": "EN", "unsubscribed": False}
    [call] = contacts.requests
    assert (call.method, call.url) == ("POST", "https://iad1.qualtrics.com/API/v3/directories/POOL_1/contacts")
    assert call.headers["X-API-TOKEN"] == MASKED_TOKEN
    assert call.headers["Content-Type"] == "application/json"
    assert call.body == {"firstName": "Ada", "email": "ada@example.com", "extRef": "user-1", "unsubscribed": False,
                         "language": "EN"}
    assert list(call.body) == ["firstName", "email", "extRef", "unsubscribed", "language"]   # Segment's key order


def test_the_datacenter_and_the_base_url_choose_the_host():
    [call] = only(run(IDENTIFY, datacenter="fra1"), "Contacts").requests
    assert call.url == "https://fra1.qualtrics.com/API/v3/directories/POOL_1/contacts"
    [call] = only(run(IDENTIFY, base_url="http://127.0.0.1:8765/"), "Contacts").requests
    assert call.url == "http://127.0.0.1:8765/API/v3/directories/POOL_1/contacts"


def test_a_bad_datacenter_is_refused():
    with pytest.raises(DestinationError) as caught:
        run(IDENTIFY, datacenter="evil.com/x")
    assert caught.value.code == "qualtrics_not_configured"


# --- upsertContactTransaction ---------------------------------------------------------------------

def test_a_transaction_without_contact_id_searches_then_creates_then_posts_with_the_deterministic_key():
    transactions = only(run(TRANSACTION), "Transactions")
    assert transactions.outcome == "delivered"
    search, create, post = transactions.requests
    base = "https://iad1.qualtrics.com/API/v3/directories/POOL_1"
    assert (search.method, search.url) == ("POST", f"{base}/contacts/search")
    assert search.body == {"filter": {"conjunction": "and", "filters": [
        {"filterType": "extRef", "comparison": "eq", "value": "user-1"},
        {"filterType": "email", "comparison": "eq", "value": "ada@example.com"}]}}
    assert "only if the search finds none" in create.step
    assert (create.method, create.url) == ("POST", f"{base}/contacts")
    assert create.body == {"email": "ada@example.com", "extRef": "user-1", "unsubscribed": False, "language": "EN"}
    assert (post.method, post.url) == ("POST", f"{base}/transactions")
    # The key the worker derives for this message (same envelope, same QueuedWork, as the worker builds them).
    [message] = route(TRANSACTION, [s for s in SUBSCRIPTIONS if s.name == "Transactions"], "2026-11-29T10:00:00.250Z")
    delivery = QueuedWork.from_sqs_record({"messageId": "x", "body": message.to_json()})
    delivery.message = message
    assert post.body == {transaction_key(delivery): {
        "contactId": CONTACT_PLACEHOLDER, "mailingListId": "CG_1",
        "data": {"orderId": "o-1", "total": 12.5, "segmentMessageId": "m-tx",
                 "segmentDeliveryKey": transaction_key(delivery)},
        "transactionDate": "2026-11-29 10:00:00"}}


def test_the_transaction_key_does_not_change_between_runs():
    first = only(run(TRANSACTION), "Transactions").requests[-1].body
    again = only(preview([TRANSACTION], SUBSCRIPTIONS, now=datetime(2027, 1, 1, tzinfo=UTC)), "Transactions")
    assert list(first) == list(again.requests[-1].body)


def test_a_known_contact_id_skips_the_lookup():
    event = {**TRANSACTION, "traits": {"qualtricsContactId": "CID_9"}}
    [post] = only(run(event), "Transactions").requests
    assert post.url.endswith("/transactions")
    [transaction] = post.body.values()
    assert transaction["contactId"] == "CID_9"


def test_without_a_date_the_transaction_uses_the_time_the_ingest_accepted_it():
    event = {k: v for k, v in TRANSACTION.items() if k != "timestamp"}
    [transaction] = only(run(event), "Transactions").requests[-1].body.values()
    assert transaction["transactionDate"] == "2026-11-29 10:00:00"


def test_an_invalid_payload_shows_the_error_and_what_the_mapping_resolved_to():
    event = {**TRANSACTION, "timestamp": "2026-11-29T10:00:00Z", "properties": {"total": 1}}
    subs = parse_subscriptions({"subscriptions": [
        {"name": "Dated", "actionSlug": "upsertContactTransaction", "trigger": 'type = "track"',
         "mapping": {"directoryId": "POOL_1", "mailingListId": "CG_1",
                     "transactionDate": {"@path": "$.properties.when"}, "contactId": {"@path": "$.properties.total"},
                     "extRef": {"@path": "$.properties.nobody"}}}]}, environ={})
    dated = only(run(event, subscriptions=subs), "Dated")
    assert dated.outcome is Outcome.DEAD_LETTERED and dated.requests == [] and dated.payload is None
    assert dated.error["code"] == "invalid_payload" and "extRef" in dated.error["message"]
    assert dated.resolved["contactId"] == 1 and "extRef" not in dated.resolved


# --- triggerXflowWorkflow -------------------------------------------------------------------------

def test_a_workflow_is_a_post_of_the_event_payload_to_its_url():
    workflow = only(run(TRANSACTION), "Workflow")
    [call] = workflow.requests
    assert (call.method, call.url) == ("POST", WORKFLOW_URL)
    assert call.headers["X-API-TOKEN"] == MASKED_TOKEN
    assert call.body == {"event": "Transaction Created", "type": "track", "userId": "user-1",
                         "properties": {"orderId": "o-1", "total": 12.5}, "traits": {"email": "ada@example.com"}}


def test_a_workflow_url_outside_qualtrics_is_the_workers_error_and_no_request():
    subs = parse_subscriptions({"subscriptions": [
        {"name": "Elsewhere", "actionSlug": "triggerXflowWorkflow", "trigger": 'type = "track"',
         "mapping": {"workflowUrl": "https://hooks.example.com/x"}}]}, environ={})
    elsewhere = only(run(TRANSACTION, subscriptions=subs), "Elsewhere")
    assert elsewhere.outcome is Outcome.DEAD_LETTERED and elsewhere.requests == []
    assert elsewhere.error["code"] == "workflow_url_not_allowed"
    # ... unless it is QUALTRICS_BASE_URL's origin
    allowed = only(run(TRANSACTION, subscriptions=subs, base_url="https://hooks.example.com"), "Elsewhere")
    assert [c.url for c in allowed.requests] == ["https://hooks.example.com/x"]


# --- output ---------------------------------------------------------------------------------------

def test_the_text_and_json_forms_never_show_the_token():
    result = run(IDENTIFY, TRANSACTION)
    text, data = render(result), json.dumps(result.to_dict())
    assert TOKEN_PLACEHOLDER not in text and TOKEN_PLACEHOLDER not in data
    assert MASKED_TOKEN in text and MASKED_TOKEN in data


def test_the_text_form_lists_each_event_subscription_and_request():
    text = render(run(TRANSACTION))
    assert "event 1 of 1: track \"Transaction Created\" messageId=m-tx userId=user-1" in text
    assert "'Contacts' (addContactToXmd): not triggered: type = \"identify\" is false" in text
    assert "1. look the contact up" in text and "2. create contact (only if the search finds none)" in text
    assert "POST https://iad1.qualtrics.com/API/v3/directories/POOL_1/transactions" in text
    assert "'Switched off' (addContactToXmd): disabled" in text


def test_the_json_form_has_every_event_and_subscription():
    data = run(IDENTIFY, TRANSACTION).to_dict()
    assert [e["messageId"] for e in data["events"]] == ["m-identify", "m-tx"]
    assert [s["name"] for s in data["events"][1]["subscriptions"]] == [s.name for s in SUBSCRIPTIONS]
    transactions = data["events"][1]["subscriptions"][1]
    assert transactions["outcome"] == "delivered"
    assert [r["url"].rsplit("/", 1)[-1] for r in transactions["requests"]] == ["search", "contacts", "transactions"]
