"""The claim protocol of idempotency.py, one set of tests run against both stores.

The memory store (pure tests, the preview) and the DynamoDB store (the workers) must answer alike, so each
test runs on ``MemoryIdempotencyStore`` and on ``DynamoIdempotencyStore`` talking HTTP to a moto server,
with a table made as template.yaml makes it (key ``id``, TTL ``expiration``). Both read the same clock,
which the tests move by hand; it stays on whole seconds, the resolution the DynamoDB records keep.
"""

from __future__ import annotations

import multiprocessing
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from segment_qualtrics.adapters.aws import DynamoIdempotencyStore
from segment_qualtrics.delivery.idempotency import Claim, ClaimState, IdempotencyStore, MemoryIdempotencyStore

from local.moto_server import LocalAwsServer

LEASE = 60
START = 1_700_000_000
KEEP = 19 * 24 * 3600


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _client(endpoint: str):
    return boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """The local stack's AWS endpoint (local/moto_server.py): moto, with DynamoDB's atomic conditional writes."""
    server = LocalAwsServer().start()
    try:
        yield server.endpoint_url
    finally:
        server.stop()


def _make_table(endpoint: str) -> str:
    """A table as template.yaml's IdempotencyTable: hash key ``id`` (S), on demand, TTL on ``expiration``."""
    client = _client(endpoint)
    name = f"idempotency-{uuid.uuid4().hex[:12]}"
    client.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}])
    client.update_time_to_live(TableName=name, TimeToLiveSpecification={"AttributeName": "expiration",
                                                                        "Enabled": True})
    return name


@pytest.fixture(params=["memory", "dynamodb"])
def make_store(request) -> Callable[[Clock], IdempotencyStore]:
    """A factory: stores made by one test share one table (or one memory), as workers share theirs."""
    if request.param == "memory":
        stores: dict[int, MemoryIdempotencyStore] = {}   # one store is one table: workers share it
        return lambda clock: stores.setdefault(id(clock), MemoryIdempotencyStore(clock=clock))
    endpoint = request.getfixturevalue("moto_endpoint")
    table = _make_table(endpoint)
    return lambda clock: DynamoIdempotencyStore(_client(endpoint), table, keep_seconds=KEEP, clock=clock)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(make_store, clock) -> IdempotencyStore:
    return make_store(clock)


def claimed(*, recovering: bool, attempts: int) -> Claim:
    return Claim(ClaimState.CLAIMED, recovering=recovering, attempts=attempts)


# --- claim -----------------------------------------------------------------------------------------

def test_a_fresh_key_is_claimed_as_the_first_attempt(store) -> None:
    assert store.claim("k", LEASE) == claimed(recovering=False, attempts=1)


def test_keys_are_independent(store) -> None:
    store.claim("a", LEASE)
    store.complete("a")
    assert store.claim("b", LEASE) == claimed(recovering=False, attempts=1)


def test_a_leased_key_is_busy_until_its_lease_runs_out(store, clock) -> None:
    store.claim("k", LEASE)
    assert store.claim("k", LEASE) == Claim(ClaimState.BUSY, retry_after=LEASE)
    clock.advance(LEASE - 1)
    assert store.claim("k", LEASE) == Claim(ClaimState.BUSY, retry_after=1)


def test_a_busy_claim_does_not_count_as_an_attempt(store, clock) -> None:
    store.claim("k", LEASE)
    for _ in range(3):
        assert store.claim("k", LEASE).state is ClaimState.BUSY
    clock.advance(LEASE)
    assert store.claim("k", LEASE) == claimed(recovering=True, attempts=2)


def test_a_lease_runs_out_at_its_end(store, clock) -> None:
    """Busy means a wait of more than zero seconds: at the lease's last second the key is free again."""
    store.claim("k", LEASE)
    clock.advance(LEASE)
    assert store.claim("k", LEASE) == claimed(recovering=True, attempts=2)


def test_a_lease_is_never_shorter_than_asked_on_a_clock_between_seconds(store, clock) -> None:
    clock.advance(0.9)
    store.claim("k", LEASE)
    clock.advance(LEASE - 0.1)
    busy = store.claim("k", LEASE)
    assert busy.state is ClaimState.BUSY and busy.retry_after > 0
    clock.advance(1.1)
    assert store.claim("k", LEASE).state is ClaimState.CLAIMED


def test_an_expired_lease_is_recovered_and_counted_each_time(store, clock) -> None:
    store.claim("k", LEASE)
    clock.advance(LEASE + 5)
    assert store.claim("k", LEASE) == claimed(recovering=True, attempts=2)
    assert store.claim("k", LEASE).state is ClaimState.BUSY   # the recovering claim holds a new lease
    clock.advance(LEASE + 1)
    assert store.claim("k", LEASE) == claimed(recovering=True, attempts=3)


def test_the_lease_is_the_one_each_claim_asks_for(store, clock) -> None:
    store.claim("k", 5)
    assert store.claim("k", LEASE) == Claim(ClaimState.BUSY, retry_after=5)
    clock.advance(5)
    store.claim("k", 300)
    clock.advance(100)
    assert store.claim("k", LEASE) == Claim(ClaimState.BUSY, retry_after=200)


# --- complete --------------------------------------------------------------------------------------

def test_a_completed_key_is_done_for_good(store, clock) -> None:
    store.claim("k", LEASE)
    store.complete("k")
    assert store.claim("k", LEASE) == Claim(ClaimState.DONE)
    clock.advance(14 * 24 * 3600)   # a redrive from the DLQ on its last day
    assert store.claim("k", LEASE) == Claim(ClaimState.DONE)


def test_a_recovering_claim_that_completes_is_done(store, clock) -> None:
    store.claim("k", LEASE)
    store.release("k", uncertain=True)
    assert store.claim("k", LEASE).recovering
    store.complete("k")
    assert store.claim("k", LEASE) == Claim(ClaimState.DONE)


# --- release ---------------------------------------------------------------------------------------

def test_a_certain_release_forgets_the_key(store) -> None:
    """Qualtrics refused it and nothing landed: the next claim starts afresh, counting from one."""
    store.claim("k", LEASE)
    store.release("k", uncertain=False)
    assert store.claim("k", LEASE) == claimed(recovering=False, attempts=1)


def test_an_uncertain_release_frees_the_key_for_a_recovering_claim_at_once(store) -> None:
    store.claim("k", LEASE)
    store.release("k", uncertain=True)
    assert store.claim("k", LEASE) == claimed(recovering=True, attempts=2)


def test_an_uncertain_release_keeps_the_attempt_count(store, clock) -> None:
    for attempt in range(1, 4):
        assert store.claim("k", LEASE) == claimed(recovering=attempt > 1, attempts=attempt)
        store.release("k", uncertain=True)
    clock.advance(3600)
    assert store.claim("k", LEASE).attempts == 4


def test_an_uncertain_release_of_an_unknown_key_leaves_it_uncertain(store) -> None:
    """Whatever happened to its record, the key may have landed: the next claim recovers (never busy forever)."""
    store.release("k", uncertain=True)
    assert store.claim("k", LEASE) == claimed(recovering=True, attempts=1)


def test_a_certain_release_of_an_unknown_key_is_harmless(store) -> None:
    store.release("k", uncertain=False)
    assert store.claim("k", LEASE) == claimed(recovering=False, attempts=1)


@pytest.mark.parametrize("uncertain", [True, False])
def test_a_release_never_undoes_done(make_store, clock, uncertain: bool) -> None:
    """A worker whose lease was taken over releases late: the key another worker completed stays done."""
    slow, fast = make_store(clock), make_store(clock)
    assert slow.claim("k", LEASE).state is ClaimState.CLAIMED
    clock.advance(LEASE)
    assert fast.claim("k", LEASE).recovering
    fast.complete("k")
    slow.release("k", uncertain=uncertain)
    assert fast.claim("k", LEASE) == Claim(ClaimState.DONE)


# --- concurrency -----------------------------------------------------------------------------------

WORKERS = 8


def _race(make_store, clock: Clock, key: str) -> list[Claim]:
    """WORKERS stores (one client each, as separate Lambdas) claim ``key`` at the same moment."""
    stores = [make_store(clock) for _ in range(WORKERS)]
    start = threading.Barrier(WORKERS)

    def claim(store: IdempotencyStore) -> Claim:
        start.wait()
        return store.claim(key, LEASE)

    with ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(claim, stores))


@pytest.mark.parametrize("round_", range(5))
def test_concurrent_claims_of_a_fresh_key_let_exactly_one_through(make_store, clock, round_: int) -> None:
    claims = _race(make_store, clock, f"fresh-{round_}")
    assert sorted(c.state.value for c in claims) == ["busy"] * (WORKERS - 1) + ["claimed"]
    assert [c for c in claims if c.state is ClaimState.CLAIMED] == [claimed(recovering=False, attempts=1)]
    assert all(c.retry_after == LEASE for c in claims if c.state is ClaimState.BUSY)


@pytest.mark.parametrize("round_", range(5))
def test_concurrent_claims_of_an_expired_lease_let_exactly_one_recover(make_store, clock, round_: int) -> None:
    key = f"expired-{round_}"
    make_store(clock).claim(key, LEASE)
    clock.advance(LEASE + 1)
    claims = _race(make_store, clock, key)
    assert sorted(c.state.value for c in claims) == ["busy"] * (WORKERS - 1) + ["claimed"]
    assert [c for c in claims if c.state is ClaimState.CLAIMED] == [claimed(recovering=True, attempts=2)]


def test_the_memory_store_claims_atomically_however_often_threads_switch() -> None:
    """DynamoDB's conditional write is atomic; the memory store's read-then-write must be made so."""
    store = MemoryIdempotencyStore(clock=Clock())
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)   # a thread switch between any two bytecodes, as often as can be
    try:
        winners = [[c.state for c in _race(lambda clock: store, Clock(), f"k{n}")].count(ClaimState.CLAIMED)
                   for n in range(300)]
    finally:
        sys.setswitchinterval(interval)
    assert set(winners) == {1}


def _claim_in_process(endpoint: str, table: str, key: str, now: int, start) -> str:
    store = DynamoIdempotencyStore(_client(endpoint), table, keep_seconds=KEEP, clock=lambda: now)
    start.wait()
    claim = store.claim(key, LEASE)
    return f"{claim.state.value}:{claim.recovering}:{claim.attempts}"


def test_concurrent_claims_from_separate_processes_let_exactly_one_through(moto_endpoint) -> None:
    """As separate Lambda instances do: each process its own boto3 client and connection pool."""
    table = _make_table(moto_endpoint)
    processes = 4
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(processes) as pool:
        start = manager.Barrier(processes)
        outcomes = pool.starmap(_claim_in_process, [(moto_endpoint, table, "k", START, start)] * processes)
    assert sorted(outcomes) == ["busy:False:0"] * (processes - 1) + ["claimed:False:1"]
