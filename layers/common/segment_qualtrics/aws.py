"""AWS adapters: SQS publisher, dead-letter queue, visibility control, DynamoDB idempotency store.

Plain boto3 clients, created by the caller once per cold start; the standard ``AWS_ENDPOINT_URL``
variable points them at a local endpoint (never hard-coded here).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .envelope import QueueMessage
from .idempotency import Claim, ClaimState

SQS_BATCH_ENTRIES = 10
SQS_BATCH_BYTES = 1024 * 1024 - 16 * 1024   # the 1 MiB request cap, with room for attributes
PUBLISH_ATTEMPTS = 3


class SqsPublisher:
    """SendMessageBatch in chunks of 10, retrying the entries SQS lists in ``Failed`` inside a 200."""

    def __init__(self, sqs: Any, queue_urls: dict[str, str], sleep=time.sleep) -> None:
        self.sqs = sqs
        self.queue_urls = queue_urls
        self.sleep = sleep

    def publish(self, action: str, messages: Sequence[QueueMessage]) -> list[QueueMessage]:
        url = self.queue_urls.get(action)
        if not url:
            return list(messages)   # no queue configured for this action: report them unqueued
        unaccepted: list[QueueMessage] = []
        for chunk in _chunks(messages):
            unaccepted += self._send_chunk(url, chunk)
        return unaccepted

    def _send_chunk(self, url: str, chunk: Sequence[QueueMessage]) -> list[QueueMessage]:
        entries = [{"Id": i, "MessageBody": msg.to_json(), "MessageAttributes": msg.attributes()}
                   for i, msg in zip(_ENTRY_IDS, chunk, strict=False)]   # chunks hold at most 10
        for attempt in range(PUBLISH_ATTEMPTS):
            if attempt:
                self.sleep(0.05 * 2**attempt)
            try:
                answer = self.sqs.send_message_batch(QueueUrl=url, Entries=entries)
            except (ClientError, BotoCoreError):
                continue
            taken = {ok["Id"] for ok in answer.get("Successful", ())}
            entries = [entry for entry in entries if entry["Id"] not in taken]   # the next try sends the rest
            if not entries:
                return []
            # SenderFault entries (bad input) will not pass on a retry either; stop early for them.
            if any(f.get("SenderFault") for f in answer.get("Failed", ())):
                break
        left = {entry["Id"] for entry in entries}
        return [msg for i, msg in zip(_ENTRY_IDS, chunk, strict=False) if i in left]


_ENTRY_IDS = tuple(str(i) for i in range(SQS_BATCH_ENTRIES))   # batch entry ids, unique within a request


def _chunks(messages: Sequence[QueueMessage]) -> Sequence[Sequence[QueueMessage]]:
    """Up to 10 messages and SQS_BATCH_BYTES of bodies per SendMessageBatch."""
    if len(messages) <= SQS_BATCH_ENTRIES and sum(map(len, map(QueueMessage.to_json, messages))) <= SQS_BATCH_BYTES:
        return (messages,) if messages else ()   # the usual case, in one step
    chunks: list[list[QueueMessage]] = []
    current: list[QueueMessage] = []
    size = 0
    for message in messages:
        body_size = len(message.to_json())
        if current and (len(current) == SQS_BATCH_ENTRIES or size + body_size > SQS_BATCH_BYTES):
            chunks.append(current)
            current, size = [], 0
        current.append(message)
        size += body_size
    if current:
        chunks.append(current)
    return chunks


class SqsDeadLetterQueue:
    def __init__(self, sqs: Any, url: str) -> None:
        self.sqs = sqs
        self.url = url

    def send(self, body: str, attributes: dict[str, dict[str, str]]) -> None:
        self.sqs.send_message(QueueUrl=self.url, MessageBody=body, MessageAttributes=attributes)


class SqsVisibility:
    def __init__(self, sqs: Any, url: str) -> None:
        self.sqs = sqs
        self.url = url

    def delay(self, receipt_handle: str, seconds: int) -> None:
        self.sqs.change_message_visibility(QueueUrl=self.url, ReceiptHandle=receipt_handle,
                                           VisibilityTimeout=seconds)


class DynamoIdempotencyStore:
    """The claim protocol of idempotency.py with conditional writes. Table: key ``id``, TTL ``expiration``."""

    def __init__(self, dynamodb: Any, table: str, keep_seconds: int = 19 * 24 * 3600, clock=time.time) -> None:
        self.dynamodb = dynamodb
        self.table = table
        # Longer than a message can live: the DLQ's retention plus a redriven message's stay in its source
        # queue (the worker passes WorkerSettings.idempotency_keep_seconds(); 14 + 5 days by default).
        self.keep_seconds = keep_seconds
        self.clock = clock

    def claim(self, key: str, lease_seconds: int) -> Claim:
        # Whole seconds: the lease ends on the second at or after the one asked for, never before it.
        clock = self.clock()
        now, lease_until = math.floor(clock), math.ceil(clock + lease_seconds)
        try:
            # An update, not a put: it creates the record or takes over an expired lease, counting the claim.
            answer = self.dynamodb.update_item(
                TableName=self.table,
                Key={"id": {"S": key}},
                UpdateExpression="SET #s = :p, leaseUntil = :lease, expiration = :exp ADD attempts :one",
                ConditionExpression="attribute_not_exists(id) OR (#s = :p AND leaseUntil <= :now)",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":p": {"S": "IN_PROGRESS"}, ":now": {"N": str(now)},
                                           ":lease": {"N": str(lease_until)},
                                           ":exp": {"N": str(now + self.keep_seconds)}, ":one": {"N": "1"}},
                ReturnValues="ALL_OLD",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            item = self.dynamodb.get_item(TableName=self.table, Key={"id": {"S": key}},
                                          ConsistentRead=True).get("Item", {})
            if item.get("status", {}).get("S") == "COMPLETED":
                return Claim(ClaimState.DONE)
            lease_until = int(item.get("leaseUntil", {}).get("N", now))
            return Claim(ClaimState.BUSY, retry_after=max(lease_until - now, 1))
        old = answer.get("Attributes") or {}
        attempts = int(old.get("attempts", {}).get("N", "0")) + 1
        return Claim(ClaimState.CLAIMED, recovering=bool(old), attempts=attempts)

    def complete(self, key: str) -> None:
        now = int(self.clock())
        self.dynamodb.put_item(TableName=self.table, Item={
            "id": {"S": key}, "status": {"S": "COMPLETED"}, "completedAt": {"N": str(now)},
            "expiration": {"N": str(now + self.keep_seconds)}})

    def release(self, key: str, *, uncertain: bool) -> None:
        # Never a COMPLETED record: a late release (a lease taken over) must not undo another worker's done.
        names, in_progress = {"#s": "status"}, {":p": {"S": "IN_PROGRESS"}}
        try:
            if uncertain:
                # A whole record, even where none was left: a claim on a record without a status would be busy
                # for ever, and one without ``expiration`` would never go.
                now = int(self.clock())
                self.dynamodb.update_item(
                    TableName=self.table, Key={"id": {"S": key}},
                    UpdateExpression="SET #s = :p, leaseUntil = :zero, expiration = :exp",
                    ConditionExpression="attribute_not_exists(id) OR #s = :p",
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues={**in_progress, ":zero": {"N": "0"},
                                               ":exp": {"N": str(now + self.keep_seconds)}})
            else:
                self.dynamodb.delete_item(TableName=self.table, Key={"id": {"S": key}}, ConditionExpression="#s = :p",
                                          ExpressionAttributeNames=names, ExpressionAttributeValues=in_progress)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
