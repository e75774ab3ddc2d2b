"""Exactly-once bookkeeping, keyed on (action, subscription, Segment messageId).

A worker *claims* a key before it calls Qualtrics and *completes* it after. The protocol, kept by
conditional writes in the adapter (aws.py), is:

- no record            → claimed (fresh)
- COMPLETED            → done: a redelivery; report success, call nothing
- IN_PROGRESS, leased  → busy: another worker has it; retry later
- IN_PROGRESS, expired → claimed (recovering): an earlier attempt died or failed after it may have
                         reached Qualtrics, so the action checks Qualtrics before acting again.

A failed message is never marked done: a permanent failure deletes the record (Qualtrics refused it,
nothing happened); a transient one leaves it with an expired lease (we cannot know whether it landed).
A done message is never undone: a release finding COMPLETED (a late worker whose lease was taken over)
leaves it so.

Each claim counts itself in the record (``attempts``): the worker's attempt number. SQS's receive count
also counts receives that attempted nothing (a busy key, a deferral, a batch that died before its turn).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol


class ClaimState(Enum):
    CLAIMED = "claimed"
    DONE = "done"
    BUSY = "busy"


@dataclass(frozen=True)
class Claim:
    state: ClaimState
    recovering: bool = False   # an earlier attempt may have reached Qualtrics
    retry_after: float | None = None   # BUSY: seconds until the other worker's lease runs out
    attempts: int = 0          # CLAIMED: claims of this key so far, this one included (0: not counted)


class IdempotencyStore(Protocol):
    def claim(self, key: str, lease_seconds: int) -> Claim: ...
    def complete(self, key: str) -> None: ...
    def release(self, key: str, *, uncertain: bool) -> None: ...


class MemoryIdempotencyStore:
    """In-memory store for pure tests and the preview; same protocol as the DynamoDB adapter."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        import threading
        import time

        self._clock = clock or time.time
        self._lock = threading.Lock()   # each call is one step, as DynamoDB's conditional writes are
        self.records: dict[str, tuple[str, float, int]] = {}   # key -> (status, lease until, attempts)

    def claim(self, key: str, lease_seconds: int) -> Claim:
        with self._lock:
            now = self._clock()
            record = self.records.get(key)
            if record and record[0] == "COMPLETED":
                return Claim(ClaimState.DONE)
            if record and record[1] > now:
                return Claim(ClaimState.BUSY, retry_after=record[1] - now)
            attempts = (record[2] if record else 0) + 1
            self.records[key] = ("IN_PROGRESS", now + lease_seconds, attempts)
            return Claim(ClaimState.CLAIMED, recovering=record is not None, attempts=attempts)

    def complete(self, key: str) -> None:
        with self._lock:
            self.records[key] = ("COMPLETED", float("inf"), 0)

    def release(self, key: str, *, uncertain: bool) -> None:
        with self._lock:
            record = self.records.get(key)
            if record and record[0] == "COMPLETED":
                return   # a late release (its lease taken over) must not undo another worker's done
            if uncertain:
                self.records[key] = ("IN_PROGRESS", 0.0, record[2] if record else 0)
            else:
                self.records.pop(key, None)
