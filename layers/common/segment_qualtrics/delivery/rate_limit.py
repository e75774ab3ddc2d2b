"""One rate limit for the whole brand: every worker of every action asks it before each Qualtrics call.

Qualtrics limits calls per endpoint class (contact writes, searches, transactions, workflows, reads: about
500 a minute for each write endpoint) and per brand (about 3,000 a minute, all endpoints together). Each of
those is a *budget* here, and each budget is a GCRA bucket (the "generic cell rate algorithm", a token bucket
kept as one number): its state is the theoretical arrival time ``tat`` of the next call; a call at ``now``
is admitted when ``max(tat, now) + interval - now <= burst * interval`` and then moves ``tat`` on by one
interval. One number per budget fits DynamoDB's conditional updates with no read before the write
(adapters/dynamodb_rate_limit.py); the memory store below keeps the same state in a dict (tests, tools).

Guarantee: in any window of ``window_seconds``, a budget admits at most ``spendable`` calls, a little under
its configured limit (``SAFETY``), whatever the number of workers and however their calls interleave:
each admission moves ``tat`` on by at least one interval and never past ``now + burst * interval``.

A call first takes from its endpoint class, then from the brand; when the brand refuses, the class's token
is given back, so a saturated class never eats the brand budget of the others.

A 429 from Qualtrics *drains* the call's class bucket until its Retry-After has passed: every worker slows
down, not only the one that was refused.

Pure: no boto3, no requests. Time comes from an injected clock (wall-clock seconds, shared by the workers).
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from segment_qualtrics.delivery.outcomes import Outcome
from segment_qualtrics.destination.errors import RetryableError

BRAND = "brand"
ENDPOINT_CLASSES = ("contact_writes", "searches", "transactions", "workflows", "reads")
# Each QualtricsClient operation, and the endpoint class it is limited as (one place). An operation missing
# here still spends the brand budget.
OPERATION_CLASSES: Mapping[str, str] = {
    "create_contact": "contact_writes",
    "delete_contact": "contact_writes",
    "search_contacts": "searches",
    "create_transactions": "transactions",
    "list_transactions": "reads",
    "trigger_workflow": "workflows",
    "whoami": "reads",
    # The backfill's bulk path (tools/backfill*.py): an import writes contacts; its status is a read.
    "create_transaction_batch": "transactions",
    "start_import": "contact_writes",
    "import_status": "reads",
    "import_summary": "reads",
}
# Published figures (calls per minute); template parameters override them. 0 switches a budget off.
DEFAULT_LIMITS: Mapping[str, int] = {
    BRAND: 3000, "contact_writes": 500, "searches": 500, "transactions": 500, "workflows": 500, "reads": 3000,
}
DEFAULT_WINDOW_SECONDS = 60.0
# Spend at most this share of a limit: calls reach Qualtrics a few milliseconds after they took their token,
# in an order that differs from the order they took them, and Qualtrics' own window may start anywhere.
SAFETY = 0.97
# The steady rate, as a share of the limit; what SAFETY leaves above it is the burst: calls a budget lets
# through at once after a quiet moment (workers between batches leave such moments; the burst makes up for them).
STEADY = 0.93
# A refused call waits at least this long before it asks again (spares the store a flood of retries).
MIN_WAIT_SECONDS = 0.01
# Float rounding forgiven at epoch magnitudes (DynamoDB keeps microseconds).
ROUNDING_SECONDS = 1e-6
# A 429 without Retry-After drains the bucket for this long.
DEFAULT_429_SECONDS = 1.0


@dataclass(frozen=True)
class Budget:
    """``limit`` calls per ``window_seconds``, as a GCRA bucket: ``interval`` between calls, ``burst`` at once."""

    limit: int
    window_seconds: float = DEFAULT_WINDOW_SECONDS

    def __post_init__(self) -> None:
        if not isinstance(self.limit, int) or isinstance(self.limit, bool) or self.limit < 1:
            raise ValueError(f"a budget's limit is a whole number of calls, at least 1 (got {self.limit!r})")
        if not (isinstance(self.window_seconds, (int, float)) and math.isfinite(self.window_seconds)
                and 0 < self.window_seconds <= 86_400):
            raise ValueError(f"a budget's window is between 0 and 86400 seconds (got {self.window_seconds!r})")

    @property
    def spendable(self) -> int:
        """The most calls admitted in any window: the limit less the safety margin."""
        return max(1, math.floor(self.limit * SAFETY))

    @property
    def burst(self) -> int:
        return min(self.spendable, max(1, self.spendable + 1 - math.ceil(self.limit * STEADY)))

    @property
    def interval(self) -> float:
        # n admissions in a window W move tat on by n intervals, from above its start + 1 interval to at most
        # its end + burst intervals: n < W / interval + burst. This interval makes that n <= spendable.
        # (+ 2 us: admit() forgives 1 us of float rounding, which must not let one call more through)
        return self.window_seconds / (self.spendable - self.burst + 1) + 2 * ROUNDING_SECONDS

    @property
    def tolerance(self) -> float:
        return self.burst * self.interval


def admit(tat: float | None, now: float, budget: Budget) -> tuple[float | None, float]:
    """GCRA step: (the new tat, 0.0) when the call is admitted, else (None, seconds until it would be)."""
    start = now if tat is None else max(tat, now)
    new = start + budget.interval
    if new - now <= budget.tolerance + ROUNDING_SECONDS:
        return new, 0.0
    return None, new - budget.tolerance - now


def drained_tat(now: float, seconds: float, budget: Budget) -> float:
    """The tat at which the next call is admitted no sooner than ``now + seconds`` (after a 429)."""
    return now + seconds + budget.tolerance - budget.interval


class RateLimitStore(Protocol):
    """Where the buckets live; every operation is one atomic step on one budget, as DynamoDB's updates are."""

    def take(self, name: str, budget: Budget, now: float) -> float:
        """Admit one call: 0.0 if admitted (and counted), else the seconds until one would be."""
        ...

    def give_back(self, name: str, budget: Budget) -> None:
        """Undo one admission whose call was not made (the brand refused it)."""
        ...

    def drain(self, name: str, budget: Budget, now: float, seconds: float) -> None:
        """Admit nothing before ``now + seconds`` (never shortens a drain already in place)."""
        ...


class MemoryRateLimitStore:
    """The buckets in a dict, under a lock: one process's workers share it (unit tests, tools)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.tats: dict[str, float] = {}

    def take(self, name: str, budget: Budget, now: float) -> float:
        with self._lock:
            new, wait = admit(self.tats.get(name), now, budget)
            if new is not None:
                self.tats[name] = new
            return wait

    def give_back(self, name: str, budget: Budget) -> None:
        with self._lock:
            if name in self.tats:
                self.tats[name] -= budget.interval

    def drain(self, name: str, budget: Budget, now: float, seconds: float) -> None:
        with self._lock:
            self.tats[name] = max(self.tats.get(name, -math.inf), drained_tat(now, seconds, budget))


class RateLimited(RetryableError):
    """No token for this call before the invocation must stop: the message goes back to its queue untried.

    Not an attempt and never a dead letter: the worker hands it back with the delay the bucket predicts
    (``retry_after``), or re-enqueues a fresh copy when its receives run low (worker.py).
    """

    def __init__(self, budget: str, seconds: float) -> None:
        # Its code is the outcome it leads to.
        super().__init__(Outcome.RATE_LIMITED.value, f"the {budget} budget has no call left for {seconds:.2f} s",
                         retry_after=seconds)
        self.budget = budget


def parse_limits(values: Mapping[str, object]) -> dict[str, int]:
    """{budget name: calls per window} from settings; 0 or None switches a budget off. ValueError names the bad one."""
    limits: dict[str, int] = {}
    for name, value in values.items():
        if name != BRAND and name not in ENDPOINT_CLASSES:
            raise ValueError(f"unknown budget {name!r}; known: {', '.join((BRAND, *ENDPOINT_CLASSES))}")
        if value is None or value == 0:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"budget {name!r} must be a whole number of calls, 0 or more (got {value!r})")
        limits[name] = value
    return limits


class RateLimiter:
    """What the Qualtrics client asks before each call (``before``) and tells after a 429 (``throttled``).

    ``before`` waits for a token while the invocation has time for it (``remaining`` less ``reserve``: what
    the call itself needs), then raises ``RateLimited`` with the wait the bucket predicts. Thread-safe: a
    batch's concurrent calls share one limiter.
    """

    def __init__(self, store: RateLimitStore, limits: Mapping[str, int],
                 window_seconds: float = DEFAULT_WINDOW_SECONDS, *,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
                 jitter: Callable[[], float] = random.random, max_wait_seconds: float = 30.0) -> None:
        self.store = store
        self.budgets = {name: Budget(limit, window_seconds) for name, limit in limits.items()}
        self.clock = clock
        self.sleep = sleep
        self.jitter = jitter
        self.max_wait_seconds = max_wait_seconds   # without an invocation clock (tools, tests)
        self.remaining: Callable[[], float] | None = None   # the worker sets it per invocation
        self.reserve = 0.0   # seconds the call itself needs after its token
        self.on_wait: Callable[[str, float], None] | None = None   # (operation, seconds waited) when it waited
        self.on_error: Callable[[Exception], None] | None = None   # the store failed (the call went ahead)
        # A process's calls ask the store one at a time: of the threads of a batch, one waits for the next token
        # while the others queue here, instead of all of them asking again at each predicted moment.
        self._turn = threading.Lock()

    def _names(self, operation: str) -> list[str]:
        klass = OPERATION_CLASSES.get(operation)
        return [name for name in (klass, BRAND) if name in self.budgets]

    def _may_wait(self) -> float:
        if self.remaining is None:
            return self.max_wait_seconds
        return max(0.0, self.remaining() - self.reserve)

    def before(self, operation: str) -> None:
        names = self._names(operation)
        if not names:
            return
        started = self.clock()
        patience = self._may_wait()
        if not (self._turn.acquire(timeout=patience) if patience > 0 else self._turn.acquire(blocking=False)):
            # The calls queued ahead of this one took all the time left: come back after as long again.
            waited = self.clock() - started
            if self.on_wait:
                self.on_wait(operation, waited)
            raise RateLimited(OPERATION_CLASSES.get(operation, BRAND), max(waited, MIN_WAIT_SECONDS))
        try:
            while True:
                refused, wait = self._take(names)
                if refused is None:
                    break
                waited = self.clock() - started
                # Asking again a little after the predicted moment spreads the processes refused together.
                pause = max(wait, MIN_WAIT_SECONDS) * (1 + 0.2 * self.jitter())
                if waited + pause > self._may_wait():
                    if self.on_wait:
                        self.on_wait(operation, waited)
                    raise RateLimited(refused, pause)
                self.sleep(pause)
        finally:
            self._turn.release()
        waited = self.clock() - started
        if waited > 0 and self.on_wait and waited >= MIN_WAIT_SECONDS:
            self.on_wait(operation, waited)

    def _take(self, names: list[str]) -> tuple[str | None, float]:
        taken: list[str] = []
        for name in names:
            try:
                wait = self.store.take(name, self.budgets[name], self.clock())
            except Exception as exc:  # noqa: BLE001 - the store is down: call anyway, Qualtrics' 429s are the net
                if self.on_error:
                    self.on_error(exc)
                return None, 0.0
            if wait > 0:
                for back in taken:
                    try:
                        self.store.give_back(back, self.budgets[back])
                    except Exception:  # noqa: BLE001 - a token not given back only slows the others down
                        pass
                return name, wait
            taken.append(name)
        return None, 0.0

    def throttled(self, operation: str, retry_after: float | None) -> None:
        """Qualtrics answered 429: drain the call's class bucket (the brand's when it has none)."""
        klass = OPERATION_CLASSES.get(operation)
        name = klass if klass in self.budgets else BRAND if BRAND in self.budgets else None
        if name is None:
            return
        seconds = retry_after if retry_after is not None and retry_after > 0 else DEFAULT_429_SECONDS
        try:
            self.store.drain(name, self.budgets[name], self.clock(), min(seconds, 3600.0))
        except Exception as exc:  # noqa: BLE001 - the call still backs off by its own Retry-After
            if self.on_error:
                self.on_error(exc)
