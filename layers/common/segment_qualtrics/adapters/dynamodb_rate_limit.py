"""The brand's rate-limit buckets in DynamoDB: one item per budget, conditional updates, no read before a write.

Items live in the idempotency table (no other table, no other IAM), under ids ``rate-limit#<budget>``: an
idempotency key starts with an action name or ``sha256``, so the two never meet. Each item holds the bucket's
``tat`` (delivery/rate_limit.py) and an ``expiration`` a day ahead, so the table's TTL removes budgets no
longer used (a missing item is a quiet bucket).

An admission is one UpdateItem in one of two forms, each guarded by the condition that makes it right:
- the bucket is busy (``now < tat <= now + tolerance - interval``): ``tat = tat + interval``;
- the bucket is quiet (no item, or ``tat <= now``): ``tat = now + interval``.
A failed condition returns the item (ReturnValuesOnConditionCheckFailure), which says whether the other form
applies or how long to wait. Under contention the store tries again a few times, then reports a short wait.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from botocore.exceptions import ClientError

from segment_qualtrics.delivery.rate_limit import Budget

KEY_PREFIX = "rate-limit#"
EXPIRATION_SECONDS = 24 * 3600
TRIES = 4
CONTENDED_WAIT_SECONDS = 0.02


MICRO = Decimal("0.000001")


def _micro(value: float, *, up: bool = False) -> Decimal:
    """To the microsecond, rounded the strict way: intervals and new tats up, clocks down. All the store's
    sums are then exact decimals, as DynamoDB computes them."""
    return Decimal(repr(value)).quantize(MICRO, rounding=ROUND_CEILING if up else ROUND_FLOOR)


def _n(value: Decimal) -> dict[str, str]:
    return {"N": format(value, "f")}


def _conditional_failure(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class DynamoRateLimitStore:
    def __init__(self, dynamodb: Any, table: str, prefix: str = KEY_PREFIX) -> None:
        self.dynamodb = dynamodb
        self.table = table
        self.prefix = prefix   # item ids: prefix + budget name (tests keep theirs apart with their own)
        self._busy_hint: dict[str, bool] = {}   # which form last worked per budget: try it first

    def _key(self, name: str) -> dict[str, dict[str, str]]:
        return {"id": {"S": self.prefix + name}}

    def _update(self, name: str, expression: str, condition: str, values: dict[str, Any]) -> dict[str, Any] | None:
        """None when it applied; else the item as it was (empty: no item)."""
        try:
            self.dynamodb.update_item(
                TableName=self.table, Key=self._key(name), UpdateExpression=expression,
                ConditionExpression=condition, ExpressionAttributeValues=values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD")
            return None
        except ClientError as exc:
            if not _conditional_failure(exc):
                raise
            return exc.response.get("Item") or {}

    def take(self, name: str, budget: Budget, now: float) -> float:
        interval, clock = _micro(budget.interval, up=True), _micro(now)
        limit = clock + (budget.burst - 1) * interval   # a busy bucket admits while tat <= limit
        exp = {":exp": {"N": str(int(now) + EXPIRATION_SECONDS)}}
        busy = self._busy_hint.get(name, False)
        for _ in range(TRIES):
            if busy:
                item = self._update(name, "SET tat = tat + :i, expiration = :exp", "tat > :now AND tat <= :lim",
                                    {":i": _n(interval), ":now": _n(clock), ":lim": _n(limit), **exp})
            else:
                item = self._update(name, "SET tat = :t, expiration = :exp",
                                    "attribute_not_exists(tat) OR tat <= :now",
                                    {":t": _n(clock + interval), ":now": _n(clock), **exp})
            if item is None:
                self._busy_hint[name] = busy
                return 0.0
            tat = Decimal(item["tat"]["N"]) if "tat" in item else None
            if tat is not None and tat > limit:
                self._busy_hint[name] = True
                return float(tat - limit)
            busy = tat is not None and tat > clock   # it changed under us: the other form applies now
        return CONTENDED_WAIT_SECONDS

    def give_back(self, name: str, budget: Budget) -> None:
        try:
            self.dynamodb.update_item(TableName=self.table, Key=self._key(name), UpdateExpression="SET tat = tat - :i",
                                      ConditionExpression="attribute_exists(tat)",
                                      ExpressionAttributeValues={":i": _n(_micro(budget.interval, up=True))})
        except ClientError as exc:
            if not _conditional_failure(exc):
                raise

    def drain(self, name: str, budget: Budget, now: float, seconds: float) -> None:
        # drained_tat() in the store's exact decimals: the first call admitted comes no sooner than now + seconds.
        tat = _micro(now + seconds, up=True) + (budget.burst - 1) * _micro(budget.interval, up=True)
        self._update(name, "SET tat = :t, expiration = :exp", "attribute_not_exists(tat) OR tat < :t",
                     {":t": _n(tat),
                      ":exp": {"N": str(int(now + seconds) + EXPIRATION_SECONDS)}})
