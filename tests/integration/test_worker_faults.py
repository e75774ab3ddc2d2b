"""The worker under hostile messages and partial failure, through the local stack (docs/error-model.md).

Messages go straight onto an action queue, as a DLQ redrive or a message from an older version would bring
them: the ingest's own limits are not there to help.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests

QUEUE = "UpsertContactTransactionQueue"
DLQ = "UpsertContactTransactionDeadLetterQueue"
SUBSCRIPTION = "Upsert contact transaction"


def transaction_event(n: int) -> dict:
    return {"type": "track", "event": "Transaction Created", "messageId": f"msg-{n}", "userId": f"buyer-{n}",
            "properties": {"orderId": f"ord-{n}", "total": 10.5},
            "traits": {"email": f"buyer-{n}@example.com"}, "timestamp": "2026-11-29T10:00:00.500Z"}


def envelope(n: int, *, message_id: str | None = None, event: dict | None = None) -> str:
    return json.dumps({"version": 1, "action": "upsertContactTransaction", "subscription": SUBSCRIPTION,
                       "messageId": message_id or f"msg-{n}", "receivedAt": "2026-11-29T10:00:00Z",
                       "event": event or transaction_event(n)})


def deep(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def deep_properties(n: int) -> str:
    # Mapped into transactionData ($.properties): the resolver used to recurse on it and hit RecursionError.
    return envelope(n).replace('"orderId"', '"nested":' + deep(5000) + ',"orderId"', 1)


def deep_body(n: int) -> str:
    # So deep that json.loads itself gives up (RecursionError) before the envelope can even be read.
    return envelope(n).replace('"orderId"', '"nested":' + deep(100_000) + ',"orderId"', 1)


POISONS = {
    "event nested 5,000 deep": (deep_properties, "invalid_payload", "deeper than 64"),
    "body nested 100,000 deep": (deep_body, "invalid_message", "nested too deep"),
}


@pytest.mark.parametrize("poison", POISONS, ids=list(POISONS))
def test_one_poisoned_record_in_a_batch_of_ten(stack, client, poison):
    make, code, reason = POISONS[poison]
    bodies = [envelope(n) for n in range(9)]
    bodies.insert(4, make(99))
    stack.client("sqs").send_message_batch(QueueUrl=stack.queue_url(QUEUE), Entries=[
        {"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies)])
    stack.drain()

    recorded = sorted(t["data"]["segmentMessageId"] for t in client.transactions())
    assert recorded == [f"msg-{n}" for n in range(9)]
    [dead] = client.dead_letters(DLQ)
    assert dead["errorCode"] == code and reason in dead["errorMessage"], dead
    assert dead["errorRetryable"] == "false"
    assert dead["body"] == bodies[4]   # the message as it came, ready for a redrive once fixed


def test_a_5_kb_message_id_in_a_batch_is_delivered_with_the_rest(stack, client):
    """Its idempotency key would be over DynamoDB's 2048-byte key limit (a ValidationException that used to
    kill the whole batch): a long key is hashed, so real DynamoDB takes it and all ten are delivered, once."""
    bodies = [envelope(n) for n in range(9)]
    bodies.insert(4, envelope(99, message_id="m" * 5000))
    for _ in range(2):   # the second time, every message is a duplicate
        stack.client("sqs").send_message_batch(QueueUrl=stack.queue_url(QUEUE), Entries=[
            {"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies)])
        stack.drain()

    recorded = sorted(t["data"]["segmentMessageId"] for t in client.transactions())
    assert recorded == sorted([f"msg-{n}" for n in range(9)] + ["m" * 5000])
    assert client.dead_letters(DLQ) == []


def test_a_crash_part_way_through_a_batch_reruns_only_the_call_in_flight(stack, client):
    """Each message is marked done as its own call succeeds: the crash re-runs at most the call in flight."""
    sqs = stack.client("sqs")
    queue = stack.queue_url("TriggerXflowWorkflowQueue")
    sqs.set_queue_attributes(QueueUrl=queue, Attributes={"VisibilityTimeout": "2"})   # the batch comes back soon
    function = stack.functions["TriggerXflowWorkflowFunction"]
    function.stop()
    # Short: the idempotency lease follows the invocation's remaining time (reset restores the timeout). Shorter
    # than one call's worst case, it also leaves the no-time-left rule out of this test.
    function.timeout = 6
    # One call after another (reset restores the batch concurrency): at most one call is then in flight.
    function.environment["QUALTRICS_BATCH_CONCURRENCY"] = "1"
    # Every workflow call lands at once but answers slowly, so the crash finds one call in flight.
    client.fault(pathPattern="/triggers$", status=0, times=5, when="after", delaySeconds=1.0)
    sqs.send_message_batch(QueueUrl=queue, Entries=[
        {"Id": str(n), "MessageBody": json.dumps({
            "version": 1, "action": "triggerXflowWorkflow", "subscription": "Start workflow",
            "messageId": f"msg-{n}", "receivedAt": "2026-11-29T10:00:00Z", "event": transaction_event(n)})}
        for n in range(5)])
    function.warm()
    starts = function.cold_starts

    worker = threading.Thread(target=stack.deliver, args=("TriggerXflowWorkflowFunction",),
                              kwargs={"window": False})
    worker.start()
    deadline = time.monotonic() + 20
    while len(client.workflow_runs()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(client.workflow_runs()) == 3
    function.crash()   # two answered and marked done; the third landed, its answer still on the way
    worker.join(timeout=30)
    requests.delete(stack.sandbox.base_url + "/_sandbox/faults", timeout=5)
    stack.drain(timeout=60)

    assert function.cold_starts == starts + 1   # the crash really ended the process
    runs: dict[str, int] = {}
    for run in client.workflow_runs():
        order = run["body"]["properties"]["orderId"]
        runs[order] = runs.get(order, 0) + 1
    assert set(runs) == {f"ord-{n}" for n in range(5)}
    assert runs["ord-0"] == runs["ord-1"] == 1   # delivered before the crash: not run again
    assert runs["ord-2"] in (1, 2)               # the ambiguous window: the one call in flight
    assert sum(runs.values()) <= 6
    assert client.dead_letters("TriggerXflowWorkflowDeadLetterQueue") == []


def test_a_refused_check_keeps_the_key_uncertain_so_a_redrive_does_not_post_twice(stack, client):
    # 1st attempt: Qualtrics records the transaction, then the answer is lost (500 after applying it).
    client.fault(pathPattern="/transactions$", method="POST", status=500, times=1, when="after")
    # 2nd attempt recovers: its check (listing the contact's transactions) is refused with a permanent 400.
    client.fault(pathPattern="/transactions$", method="GET", status=400, times=1)
    sqs = stack.client("sqs")
    sqs.send_message(QueueUrl=stack.queue_url(QUEUE), MessageBody=envelope(1))
    stack.drain()
    [dead] = client.dead_letters(DLQ)
    assert (dead["errorCode"], dead["httpStatus"]) == ("qualtrics_rejected", "400")
    assert len(client.transactions()) == 1

    # The operator redrives it: the key stayed uncertain, so this attempt checks again and finds it.
    dlq = stack.queue_url(DLQ)
    [message] = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=1)["Messages"]
    sqs.send_message(QueueUrl=stack.queue_url(QUEUE), MessageBody=message["Body"])
    sqs.delete_message(QueueUrl=dlq, ReceiptHandle=message["ReceiptHandle"])
    stack.drain()
    assert len(client.transactions()) == 1
    assert len(client.qualtrics_requests("POST", "/transactions")) == 1
    assert client.dead_letters(DLQ) == []


def _idempotency_items(stack) -> list[dict]:
    table = stack.intrinsics.physical.get("IdempotencyTable", "IdempotencyTable")
    items = stack.client("dynamodb").scan(TableName=table)["Items"]
    # The rate limit's buckets share the table (docs/throughput.md): not idempotency records.
    return [item for item in items if not item["id"]["S"].startswith("rate-limit#")]


@pytest.mark.parametrize("retention", [None, 432000])
def test_idempotency_records_outlive_the_dead_letter_queue(stack, client, retention):
    if retention:
        stack.configure("UpsertContactTransactionFunction", DEAD_LETTER_RETENTION_SECONDS=str(retention))
    attributes = stack.client("sqs").get_queue_attributes(QueueUrl=stack.queue_url(DLQ),
                                                          AttributeNames=["MessageRetentionPeriod"])["Attributes"]
    dlq_retention = int(attributes["MessageRetentionPeriod"])
    assert dlq_retention == 14 * 24 * 3600   # the template's DeadLetterRetentionSeconds default
    stack.client("sqs").send_message(QueueUrl=stack.queue_url(QUEUE), MessageBody=envelope(1))
    stack.drain()
    [item] = _idempotency_items(stack)
    assert item["status"]["S"] == "COMPLETED"
    kept = int(item["expiration"]["N"]) - int(item["completedAt"]["N"])
    assert kept == (retention or dlq_retention) + 5 * 24 * 3600


# --- the Qualtrics secret: unreadable (retried) or unusable (dead-lettered at once) ---------------------

def test_a_secret_that_cannot_be_read_is_retried_then_dead_lettered_with_its_reason(stack, client):
    """A missing secret stands for any read failure (an outage, throttling, a denied read): the messages are
    retried, not dead-lettered at once as a permanent internal_error, and only give up after their attempts."""
    missing = stack.queue_url(QUEUE).replace("/", "_")   # no secret by that name
    stack.configure("UpsertContactTransactionFunction", QUALTRICS_SECRET_ARN="arn:aws:secretsmanager:us-east-1:"
                    "123456789012:secret:" + missing[-40:])
    stack.client("sqs").send_message(QueueUrl=stack.queue_url(QUEUE), MessageBody=envelope(1))
    stack.drain()
    [dead] = client.dead_letters(DLQ)
    assert dead["errorCode"] == "qualtrics_secret_unavailable" and dead["errorRetryable"] == "true", dead
    assert "ResourceNotFoundException" in dead["errorMessage"] and "gave up after 5 attempts" in dead["errorMessage"]
    assert client.transactions() == []


@pytest.mark.parametrize("value", ["a-bare-token", '["x"]', '{"datacenter": "iad1"}'])
def test_a_secret_without_a_usable_token_is_dead_lettered_at_once(stack, client, value):
    arn = stack.intrinsics.physical["QualtricsSecret"]
    stack.client("secretsmanager").put_secret_value(SecretId=arn, SecretString=value)
    stack.client("sqs").send_message(QueueUrl=stack.queue_url(QUEUE), MessageBody=envelope(1))
    stack.drain()
    [dead] = client.dead_letters(DLQ)
    assert dead["errorCode"] == "qualtrics_not_configured" and dead["errorRetryable"] == "false", dead
    assert dead["attempts"] == "1"
