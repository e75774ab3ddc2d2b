"""The ingest's SQS adapter (aws.SqsPublisher): chunks, retries of Failed entries, what it reports unqueued.

The SQS client here is a scripted stand-in for boto3's (the integration tests run the adapter against a
moto server); each call records its entries and answers from a script.
"""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import EndpointConnectionError
from segment_qualtrics.adapters.aws import SQS_BATCH_BYTES, SqsPublisher
from segment_qualtrics.destination.envelope import QueueMessage

URL = "https://sqs.local/queue/addContactToXmd"


def message(i: int, size: int = 10) -> QueueMessage:
    return QueueMessage("addContactToXmd", "Contacts", f"m-{i}", "2026-11-30T00:00:00.000000Z",
                        {"type": "identify", "userId": "u", "pad": "x" * size})


class ScriptedSqs:
    """Answers SendMessageBatch from ``script`` (a function of the entries, or an exception to raise)."""

    def __init__(self, *script) -> None:
        self.script = list(script)
        self.calls: list[list[dict]] = []

    def send_message_batch(self, QueueUrl, Entries):  # noqa: N803  (boto3's parameter names)
        assert QueueUrl == URL
        self.calls.append(Entries)
        step = self.script.pop(0) if self.script else take_all
        if isinstance(step, Exception):
            raise step
        return step(Entries)


def take_all(entries):
    return {"Successful": [{"Id": e["Id"], "MessageId": "sqs-" + e["Id"]} for e in entries], "Failed": []}


def fail_ids(*ids, sender=False):
    def answer(entries):
        return {"Successful": [{"Id": e["Id"]} for e in entries if e["Id"] not in ids],
                "Failed": [{"Id": i, "SenderFault": sender, "Code": "InternalError"} for i in ids]}
    return answer


def publisher(sqs) -> SqsPublisher:
    return SqsPublisher(sqs, {"addContactToXmd": URL}, sleep=lambda seconds: None)


def test_every_message_goes_in_batches_of_ten_with_its_json_and_attributes():
    sqs = ScriptedSqs()
    messages = [message(i) for i in range(23)]
    assert publisher(sqs).publish("addContactToXmd", messages) == []
    assert [len(entries) for entries in sqs.calls] == [10, 10, 3]
    sent = [entry for entries in sqs.calls for entry in entries]
    assert [json.loads(e["MessageBody"])["messageId"] for e in sent] == [f"m-{i}" for i in range(23)]
    assert sent[0]["MessageAttributes"]["segmentMessageId"] == {"DataType": "String", "StringValue": "m-0"}
    assert all(len({e["Id"] for e in entries}) == len(entries) for entries in sqs.calls)


def test_a_batch_stays_under_the_request_size_cap():
    sqs = ScriptedSqs()
    big = SQS_BATCH_BYTES // 3
    assert publisher(sqs).publish("addContactToXmd", [message(i, big) for i in range(5)]) == []
    sizes = [sum(len(e["MessageBody"]) for e in entries) for entries in sqs.calls]
    assert len(sqs.calls) > 1 and all(size <= SQS_BATCH_BYTES for size in sizes)
    assert sum(len(entries) for entries in sqs.calls) == 5


def test_failed_entries_are_sent_again_alone():
    sqs = ScriptedSqs(fail_ids("1", "3"), take_all)
    messages = [message(i) for i in range(5)]
    assert publisher(sqs).publish("addContactToXmd", messages) == []
    assert [[json.loads(e["MessageBody"])["messageId"] for e in entries] for entries in sqs.calls] == [
        ["m-0", "m-1", "m-2", "m-3", "m-4"], ["m-1", "m-3"]]


def test_entries_that_keep_failing_are_reported_unqueued():
    sqs = ScriptedSqs(fail_ids("2"), fail_ids("2"), fail_ids("2"))
    messages = [message(i) for i in range(4)]
    assert publisher(sqs).publish("addContactToXmd", messages) == [messages[2]]
    assert len(sqs.calls) == 3


def test_a_sender_fault_is_not_retried():
    sqs = ScriptedSqs(fail_ids("0", sender=True))
    messages = [message(i) for i in range(2)]
    assert publisher(sqs).publish("addContactToXmd", messages) == [messages[0]]
    assert len(sqs.calls) == 1


def test_a_client_error_is_retried_then_reported():
    error = EndpointConnectionError(endpoint_url=URL)
    sqs = ScriptedSqs(error, take_all)
    assert publisher(sqs).publish("addContactToXmd", [message(1)]) == []
    sqs = ScriptedSqs(error, error, error)
    messages = [message(1)]
    assert publisher(sqs).publish("addContactToXmd", messages) == messages


@pytest.mark.parametrize("answer", [{"Successful": [{"Id": "0"}]}, {}])
def test_an_answer_that_does_not_account_for_every_entry_is_not_taken_as_success(answer):
    sqs = ScriptedSqs(lambda entries: answer, lambda entries: answer, lambda entries: answer)
    messages = [message(i) for i in range(2)]
    unqueued = publisher(sqs).publish("addContactToXmd", messages)
    assert unqueued == (messages[1:] if answer else messages)


def test_an_action_without_a_queue_reports_its_messages_unqueued():
    sqs = ScriptedSqs()
    messages = [message(1)]
    assert publisher(sqs).publish("triggerXflowWorkflow", messages) == messages
    assert sqs.calls == []
