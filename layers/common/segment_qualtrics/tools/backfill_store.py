"""The idempotency table for the backfill: the claim protocol of ``DynamoIdempotencyStore`` for many keys at once.

Kept out of the workers' adapter: only the backfill (on the operator's machine) makes these calls, so the workers'
role does not grant them (docs/backfill.md lists the operator's IAM).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import ClientError

from segment_qualtrics.adapters.aws import DynamoIdempotencyStore
from segment_qualtrics.delivery.idempotency import Claim, ClaimState


class BulkIdempotencyStore(DynamoIdempotencyStore):
    def claim_many(self, keys: Sequence[str], lease_seconds: int) -> list[Claim]:
        """``claim`` of each key, in far fewer calls: BatchGetItem reads the records (100 a call); the keys
        without one are created in TransactWriteItems of 100, each put conditional on the key being absent,
        so a key a worker claims meanwhile cancels its transaction, whose keys are then claimed one by one
        (as is an expired lease, the rare case)."""
        claims: dict[str, Claim] = {}
        absent: list[str] = []
        clock = self.clock()
        now, lease_until = math.floor(clock), math.ceil(clock + lease_seconds)
        for start in range(0, len(keys), 100):
            records = self._get_many(keys[start:start + 100])
            for key in keys[start:start + 100]:
                item = records.get(key)
                if item is None:
                    absent.append(key)
                elif item.get("status", {}).get("S") == "COMPLETED":
                    claims[key] = Claim(ClaimState.DONE)
                elif int(item.get("leaseUntil", {}).get("N", "0")) > now:
                    claims[key] = Claim(ClaimState.BUSY, retry_after=max(int(item["leaseUntil"]["N"]) - now, 1))
                else:
                    claims[key] = self.claim(key, lease_seconds)
        for start in range(0, len(absent), 100):
            chunk = absent[start:start + 100]
            try:
                self.dynamodb.transact_write_items(TransactItems=[{"Put": {
                    "TableName": self.table, "ConditionExpression": "attribute_not_exists(id)",
                    "Item": {"id": {"S": key}, "status": {"S": "IN_PROGRESS"}, "leaseUntil": {"N": str(lease_until)},
                             "expiration": {"N": str(now + self.keep_seconds)}, "attempts": {"N": "1"}}}}
                    for key in chunk])
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                    raise
                claims.update({key: self.claim(key, lease_seconds) for key in chunk})
                continue
            claims.update(dict.fromkeys(chunk, Claim(ClaimState.CLAIMED, recovering=False, attempts=1)))
        return [claims[key] for key in keys]

    def complete_many(self, keys: Sequence[str]) -> None:
        """``complete`` of each key (an unconditional put, as there), 25 a BatchWriteItem call."""
        now = int(self.clock())
        for start in range(0, len(keys), 25):
            requests = [{"PutRequest": {"Item": {
                "id": {"S": key}, "status": {"S": "COMPLETED"}, "completedAt": {"N": str(now)},
                "expiration": {"N": str(now + self.keep_seconds)}}}} for key in keys[start:start + 25]]
            for attempt in range(8):
                answer = self.dynamodb.batch_write_item(RequestItems={self.table: requests})
                requests = (answer.get("UnprocessedItems") or {}).get(self.table) or []
                if not requests:
                    break
                time.sleep(min(0.05 * 2**attempt, 2.0))
            else:
                raise RuntimeError(f"DynamoDB left {len(requests)} completion(s) unprocessed after 8 attempts")

    def _get_many(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        wanted = {self.table: {"Keys": [{"id": {"S": key}} for key in dict.fromkeys(keys)], "ConsistentRead": True}}
        for attempt in range(8):
            answer = self.dynamodb.batch_get_item(RequestItems=wanted)
            for item in (answer.get("Responses") or {}).get(self.table, []):
                found[item["id"]["S"]] = item
            wanted = answer.get("UnprocessedKeys") or {}
            if not wanted:
                return found
            time.sleep(min(0.05 * 2**attempt, 2.0))
        raise RuntimeError("DynamoDB left keys unread after 8 attempts")
