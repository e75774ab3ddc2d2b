"""Writes events/: real Lambda events for every function, for `sam local invoke -e` and the tests.

Ingest events are HTTP API (payload v2) events whose bodies are signed with the local stack's shared
secret; worker events are SQS events carrying queue messages as the ingest writes them.
Run `python -m local.make_events` after changing a sample; a test checks the files are current.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from local.stack import ACCOUNT, LOCAL_SHARED_SECRET, REGION, LocalStack

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "events"
RECEIVED_AT = "2026-11-29T10:00:00.250Z"

IDENTIFY = {
    "type": "identify", "messageId": "sample-identify-1", "userId": "user-1001", "anonymousId": None,
    "traits": {"email": "ada@example.com", "firstName": "Ada", "lastName": "Lovelace", "phone": "+44 20 7946 0000",
               "language": "EN"},
    "context": {"library": {"name": "analytics.js", "version": "2.11.1"}, "ip": "203.0.113.7"},
    "integrations": {}, "timestamp": "2026-11-29T09:59:58.123Z", "sentAt": "2026-11-29T09:59:58+00:00",
    "version": 2,
}
TRANSACTION = {
    "type": "track", "event": "Transaction Created", "messageId": "sample-transaction-1", "userId": "user-1001",
    "anonymousId": None, "properties": {"orderId": "ord-5001", "total": 129.95, "currency": "EUR",
                                        "items": [{"sku": "SKU-1", "qty": 2}]},
    "context": {"traits": {"email": "ada@example.com"}}, "integrations": {},
    "timestamp": "2026-11-29T10:00:00Z", "version": 2,
}
TRANSACTION_KNOWN_CONTACT = {
    **TRANSACTION, "messageId": "sample-transaction-2", "userId": "user-1002",
    "traits": {"qualtricsContactId": "CID_KNOWN", "qualtricsMailingListId": "CG_SANDBOX"},
}

# Segment's `delete` call: a user asked to be forgotten (Segment sends it to destinations that take deletions).
DELETE = {
    "type": "delete", "messageId": "sample-delete-1", "userId": "user-1001",
    "context": {"library": {"name": "segment", "version": "1"}}, "integrations": {},
    "timestamp": "2026-11-29T10:00:02Z", "receivedAt": "2026-11-29T10:00:02.100Z", "version": 2,
}
DELETE_UNKNOWN_USER = {**DELETE, "messageId": "sample-delete-2", "userId": "user-9999"}


def _renamed(event: dict[str, Any], message_id: str) -> dict[str, Any]:
    """The same event under another messageId: each sample is a distinct Segment message (no false duplicates)."""
    return {**event, "messageId": message_id}


PAGE = {"type": "page", "name": "Pricing", "messageId": "sample-page-1", "anonymousId": "anon-77",
        "properties": {"path": "/pricing"}, "timestamp": "2026-11-29T10:00:01+00:00"}
INVALID = {"type": "purchase", "messageId": "sample-invalid-1", "userId": "user-1001"}
NO_ID = {"type": "track", "event": "Transaction Created", "messageId": "sample-invalid-2", "userId": None,
         "anonymousId": None}


def _signed(body: bytes, secret: str = LOCAL_SHARED_SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


def http_event(payload: Any, *, signature: str | None = None) -> dict[str, Any]:
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = {"content-type": "application/json", "user-agent": "Segment.io/1.0", "host": "127.0.0.1:3000",
               "x-signature": signature if signature is not None else _signed(body)}
    event = LocalStack.http_api_event("POST", "/segment", "", headers, body, "54.210.0.1")
    event["requestContext"]["requestId"] = "sample-request"
    event["requestContext"]["time"] = "29/Nov/2026:10:00:00 +0000"
    event["requestContext"]["timeEpoch"] = 1795946400000
    return event


def sqs_event(queue: str, messages: list[tuple[str, dict[str, Any]]], receive_count: int = 1) -> dict[str, Any]:
    records = []
    for index, (subscription, (action, event)) in enumerate(messages):
        body = {"version": 1, "action": action, "subscription": subscription, "messageId": event["messageId"],
                "receivedAt": RECEIVED_AT, "event": event}
        records.append({
            "messageId": f"00000000-0000-4000-8000-{index:012d}", "receiptHandle": f"sample-receipt-{index}",
            "body": json.dumps(body, separators=(",", ":")),
            "attributes": {"ApproximateReceiveCount": str(receive_count), "SentTimestamp": "1795946400250",
                           "SenderId": "AROAEXAMPLE:ingest", "ApproximateFirstReceiveTimestamp": "1795946400300"},
            "messageAttributes": {
                "action": {"stringValue": action, "stringListValues": [], "binaryListValues": [], "dataType": "String"},
                "subscription": {"stringValue": subscription, "stringListValues": [], "binaryListValues": [],
                                 "dataType": "String"},
                "segmentMessageId": {"stringValue": event["messageId"], "stringListValues": [],
                                     "binaryListValues": [], "dataType": "String"}},
            "md5OfBody": hashlib.md5(json.dumps(body).encode()).hexdigest(),
            "eventSource": "aws:sqs", "eventSourceARN": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{queue}",
            "awsRegion": REGION})
    return {"Records": records}


def all_events() -> dict[str, dict[str, Any]]:
    contact, transaction, workflow = "addContactToXmd", "upsertContactTransaction", "triggerXflowWorkflow"
    return {
        "ingest/identify.json": http_event(IDENTIFY),
        "ingest/track_transaction_created.json": http_event(TRANSACTION),
        "ingest/batch.json": http_event([_renamed(IDENTIFY, "sample-batch-identify-1"),
                                         _renamed(TRANSACTION, "sample-batch-transaction-1"), PAGE]),
        "ingest/batch_envelope.json": http_event({"batch": [_renamed(IDENTIFY, "sample-envelope-identify-1"),
                                                            TRANSACTION_KNOWN_CONTACT]}),
        "ingest/batch_with_invalid_event.json": http_event([_renamed(IDENTIFY, "sample-mixed-identify-1"),
                                                            _renamed(INVALID, "sample-mixed-invalid-1"), NO_ID]),
        # Segment retries deliver the same messageId again: the worker reports `duplicate`, Qualtrics is not called.
        "ingest/duplicate_of_identify.json": http_event(IDENTIFY),
        "ingest/invalid_event.json": http_event(INVALID),
        "ingest/delete.json": http_event(DELETE),
        "ingest/bad_signature.json": http_event(IDENTIFY, signature="0" * 40),
        "add_contact_to_xmd/identify.json": sqs_event("AddContactToXmdQueue", [
            ("Create or update contact", (contact, IDENTIFY))]),
        "upsert_contact_transaction/needs_lookup.json": sqs_event("UpsertContactTransactionQueue", [
            ("Upsert contact transaction", (transaction, TRANSACTION))]),
        "upsert_contact_transaction/with_contact_id.json": sqs_event("UpsertContactTransactionQueue", [
            ("Upsert contact transaction", (transaction, TRANSACTION_KNOWN_CONTACT))]),
        "trigger_xflow_workflow/transaction_created.json": sqs_event("TriggerXflowWorkflowQueue", [
            ("Start workflow", (workflow, TRANSACTION))]),
        "delete_contact/delete.json": sqs_event("DeleteContactQueue", [
            ("Delete contact", ("deleteContact", DELETE))]),
        "delete_contact/delete_unknown_user.json": sqs_event("DeleteContactQueue", [
            ("Delete contact", ("deleteContact", DELETE_UNKNOWN_USER))]),
    }


def render(event: dict[str, Any]) -> str:
    return json.dumps(event, indent=2) + "\n"


def main() -> None:
    for name, event in all_events().items():
        path = EVENTS / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(event))
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
