"""upsertContactTransaction and triggerXflowWorkflow through the whole path, exactly once."""

from __future__ import annotations

import json

import requests
from segment_qualtrics.delivery.transactions import MARKER_FIELD


def transaction(n: int, user: str = "buyer-1", **traits) -> dict:
    return {"type": "track", "event": "Transaction Created", "messageId": f"msg-tx-{n}", "userId": user,
            "properties": {"orderId": f"ord-{n}", "total": 10.5 * n, "items": [{"sku": "A", "qty": n}]},
            "traits": {"email": f"{user}@example.com", **traits},
            "timestamp": "2026-11-29T10:00:00.500Z"}


def seed_contact(client, contact_id: str, **fields) -> None:
    answer = requests.post(client.stack.sandbox.base_url + "/_sandbox/contacts",
                           json={"contactId": contact_id, **fields}, timeout=5)
    answer.raise_for_status()


def test_new_customer_is_created_then_gets_the_transaction(stack, client):
    assert client.post(transaction(1)).status_code == 200
    stack.drain()

    [contact] = client.contacts()
    assert (contact["extRef"], contact["email"]) == ("buyer-1", "buyer-1@example.com")
    [tx] = client.transactions()
    assert tx["contactId"] == contact["contactId"]
    assert tx["mailingListId"] == "CG_SANDBOX"
    assert tx["transactionDate"] == "2026-11-29 10:00:00"
    assert tx["data"]["orderId"] == "ord-1"
    assert tx["data"]["total"] == 10.5
    assert tx["data"]["items"] == '[{"sku":"A","qty":1}]'   # only the nested value is stringified
    assert tx["data"][MARKER_FIELD] == "msg-tx-1"
    [search] = client.qualtrics_requests("POST", "/contacts/search")
    assert search["body"] == {"filter": {"conjunction": "and", "filters": [
        {"filterType": "extRef", "comparison": "eq", "value": "buyer-1"},
        {"filterType": "email", "comparison": "eq", "value": "buyer-1@example.com"}]}}
    # The workflow subscription fired on the same event.
    [run] = client.workflow_runs()
    assert run["body"]["event"] == "Transaction Created" and run["body"]["userId"] == "buyer-1"


def test_returning_customer_is_found_by_search(stack, client):
    seed_contact(client, "CID_RETURNING", extRef="buyer-1", email="buyer-1@example.com")
    client.post(transaction(1))
    stack.drain()
    assert [c["contactId"] for c in client.contacts()] == ["CID_RETURNING"]
    assert [t["contactId"] for t in client.transactions()] == ["CID_RETURNING"]
    assert client.qualtrics_requests("POST", "/contacts") == []   # no create


def test_ambiguous_lookup_is_dead_lettered_without_a_transaction(stack, client):
    seed_contact(client, "CID_TWIN_A", extRef="buyer-1", email="buyer-1@example.com")
    seed_contact(client, "CID_TWIN_B", extRef="buyer-1", email="buyer-1@example.com")
    client.post(transaction(1))
    stack.drain()
    assert client.transactions() == []
    [dead] = client.dead_letters("UpsertContactTransactionDeadLetterQueue")
    assert dead["errorCode"] == "directory_lookup_error"
    assert "2 contacts" in dead["errorMessage"]


def test_known_contact_id_skips_the_search(stack, client):
    seed_contact(client, "CID_KNOWN", extRef="buyer-1")
    client.post(transaction(1, qualtricsContactId="CID_KNOWN"))
    stack.drain()
    assert [t["contactId"] for t in client.transactions()] == ["CID_KNOWN"]
    assert client.qualtrics_requests("POST", "/contacts/search") == []


def test_batch_of_ten_goes_in_one_call_and_one_unprocessed_fails_alone(stack, client):
    for n in range(10):
        seed_contact(client, f"CID_B{n}", extRef=f"b-{n}")
    events = [transaction(n, user=f"b-{n}", qualtricsContactId=f"CID_B{n}") for n in range(10)]
    events[4]["traits"]["qualtricsMailingListId"] = "CG_UNKNOWN"
    assert client.post(events).json()["queued"]["upsertContactTransaction"] == 10
    stack.drain()

    calls = client.qualtrics_requests("POST", "/transactions")
    assert len(calls) == 1 and len(calls[0]["body"]) == 10
    assert sorted(t["contactId"] for t in client.transactions()) == sorted(f"CID_B{n}" for n in range(10) if n != 4)
    [dead] = client.dead_letters("UpsertContactTransactionDeadLetterQueue")
    assert dead["errorCode"] == "transaction_unprocessed"
    assert dead["segmentMessageId"] == "msg-tx-4"
    assert "CG_UNKNOWN" in dead["errorMessage"]


def test_same_customer_twice_in_a_batch_is_searched_once_and_cached_after(stack, client):
    client.post([transaction(1), transaction(2)])
    stack.drain()
    client.post(transaction(3))
    stack.drain()
    assert len(client.transactions()) == 3
    assert len(client.qualtrics_requests("POST", "/contacts/search")) == 1
    assert len(client.qualtrics_requests("POST", "/contacts")) == 1


def test_same_signed_event_posted_twice_makes_one_transaction_and_one_workflow_run(stack, client):
    client.post(transaction(1))
    client.post(transaction(1))
    stack.drain()
    assert len(client.transactions()) == 1
    assert len(client.workflow_runs()) == 1


def test_response_lost_after_qualtrics_accepted_does_not_duplicate(stack, client):
    # Qualtrics stores the transactions, then the answer is lost (a 500 here, a crash or timeout in life).
    client.fault(pathPattern="/transactions$", status=500, times=1, when="after")
    client.post(transaction(1))
    stack.drain()
    assert len(client.transactions()) == 1
    assert len(client.qualtrics_requests("POST", "/transactions")) == 1
    # The retry looked the transaction up instead of posting it again.
    assert len(client.qualtrics_requests("GET", "/transactions")) == 1


def test_429_on_the_transactions_call_is_retried_and_delivered_once(stack, client):
    client.fault(pathPattern="/transactions$", status=429, times=1, retryAfter=1)
    client.post(transaction(1))
    stack.drain()
    assert len(client.transactions()) == 1
    assert [r["status"] for r in client.qualtrics_requests("POST", "/transactions")] == [429, 200]


def test_bad_transaction_date_is_a_payload_error(stack, client):
    # The ingest rejects bad timestamps, so put a message on the queue as a bad mapping could produce it.
    envelope = {"version": 1, "action": "upsertContactTransaction", "subscription": "Upsert contact transaction",
                "messageId": "msg-bad-date", "receivedAt": "2026-11-29T10:00:00Z",
                "event": {**transaction(1), "timestamp": "the day after tomorrow"}}
    stack.client("sqs").send_message(QueueUrl=stack.queue_url("UpsertContactTransactionQueue"),
                                     MessageBody=json.dumps(envelope))
    stack.drain()
    [dead] = client.dead_letters("UpsertContactTransactionDeadLetterQueue")
    assert dead["errorCode"] == "invalid_payload"
    assert "transactionDate" in dead["errorMessage"]
    assert client.transactions() == []


def test_workflow_url_on_a_foreign_host_is_refused_and_nothing_is_sent(stack, client):
    stack.configure("TriggerXflowWorkflowFunction", QUALTRICS_WORKFLOW_URL="https://collector.example.net/hook")
    client.post(transaction(1))
    stack.drain()
    [dead] = client.dead_letters("TriggerXflowWorkflowDeadLetterQueue")
    assert dead["errorCode"] == "workflow_url_not_allowed"
    assert "collector.example.net" in dead["errorMessage"]
    assert client.workflow_runs() == []
    assert len(client.transactions()) == 1   # the other action is unaffected


def test_workflow_receives_the_default_payload(stack, client):
    client.post(transaction(1))
    stack.drain()
    [run] = client.workflow_runs()
    assert run["urlTokenId"] == "local-demo"
    assert set(run["body"]) == {"event", "type", "userId", "properties", "traits"}
    assert run["body"]["properties"]["orderId"] == "ord-1"


def test_worker_crash_after_qualtrics_accepted_does_not_duplicate(stack, client):
    import threading
    import time

    sqs = stack.client("sqs")
    # Short visibility so the crashed batch comes back within the test (180 s in the template).
    sqs.set_queue_attributes(QueueUrl=stack.queue_url("UpsertContactTransactionQueue"),
                             Attributes={"VisibilityTimeout": "2"})
    function = stack.functions["UpsertContactTransactionFunction"]
    function.stop()
    function.timeout = 2   # the idempotency lease follows the invocation's remaining time (reset restores it)
    # Qualtrics stores the transaction, then is slow to answer: the worker dies meanwhile.
    client.fault(pathPattern="/transactions$", status=0, times=1, when="after", delaySeconds=8)
    client.post(transaction(1))
    function.warm()
    starts = function.cold_starts

    worker = threading.Thread(target=stack.deliver, args=("UpsertContactTransactionFunction",),
                              kwargs={"window": False})
    worker.start()
    deadline = time.monotonic() + 20
    while not client.transactions() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(client.transactions()) == 1, "Qualtrics accepted the transaction"
    function.crash()   # like Lambda, a crashed invocation deletes nothing: the batch comes back
    worker.join(timeout=30)

    stack.drain(timeout=60)
    assert function.cold_starts == starts + 1   # the crash really ended the process
    assert len(client.transactions()) == 1
    assert len(client.qualtrics_requests("POST", "/transactions")) == 1
    assert client.dead_letters("UpsertContactTransactionDeadLetterQueue") == []
