"""The brand's rate limiter: bucket arithmetic, the memory store (the shared contract), the limiter a client asks
before each call, the client's 429 drain (against the in-process Qualtrics sandbox), concurrent calls within a
batch, and the worker's hand-back of rate-limited messages (never an attempt, never a dead letter)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from segment_qualtrics.adapters import qualtrics as qualtrics_module
from segment_qualtrics.adapters.qualtrics import QualtricsClient
from segment_qualtrics.delivery.executors import AddContactExecutor
from segment_qualtrics.delivery.rate_limit import (
    BRAND,
    ENDPOINT_CLASSES,
    OPERATION_CLASSES,
    Budget,
    MemoryRateLimitStore,
    RateLimited,
    RateLimiter,
    admit,
    parse_limits,
)
from segment_qualtrics.delivery.worker import MAX_DELAY_SECONDS, Progress
from segment_qualtrics.destination.errors import PermanentError, RetryableError
from segment_qualtrics.runtime.settings import SettingsError, WorkerSettings

from local.sandbox.qualtrics_sandbox import QualtricsSandbox
from local.sandbox.tests.sandbox_api import own_sandbox
from tests.unit.rate_limit_contract import T0, RateLimitStoreContract, most_in_any_window
from tests.unit.test_worker import Setup, delivery, message

TOKEN = "rate-limit-unit-token"


class TestMemoryStore(RateLimitStoreContract):
    @pytest.fixture
    def store(self) -> MemoryRateLimitStore:
        return MemoryRateLimitStore()


# --- arithmetic ------------------------------------------------------------------------------------

@given(limit=st.integers(1, 10_000), window=st.floats(1, 86_400))
@settings(max_examples=300)
def test_a_budget_never_spends_more_than_its_limit_and_most_of_it(limit: int, window: float) -> None:
    budget = Budget(limit, window)
    assert 1 <= budget.burst <= budget.spendable <= limit
    # the steady rate: spendable - burst + 1 calls per window (>= 90 % of the limit from 50 calls a window up)
    steady = window / budget.interval
    assert steady <= budget.spendable
    if limit >= 50:
        assert steady >= 0.9 * limit


@given(times=st.lists(st.floats(0, 120, allow_nan=False), min_size=1, max_size=300),
       limit=st.integers(1, 40), window=st.floats(0.5, 30))
@settings(max_examples=200)
def test_any_sequence_of_requests_stays_within_the_budget(times: list[float], limit: int, window: float) -> None:
    budget, tat, admitted = Budget(limit, window), None, []
    for now in sorted(times):
        new, wait = admit(tat, now, budget)
        if new is not None:
            tat = new
            admitted.append(now)
        else:
            assert wait > 0
    assert most_in_any_window(admitted, window) <= budget.spendable


@pytest.mark.parametrize("limit,window", [(0, 60), (-1, 60), (True, 60), (1.5, 60), (10, 0), (10, -1),
                                          (10, float("nan")), (10, float("inf")), (10, 86_401), ("10", 60)])
def test_a_hostile_budget_is_refused_with_a_reason(limit, window) -> None:
    with pytest.raises(ValueError, match="budget"):
        Budget(limit, window)


def test_limits_name_known_budgets_only() -> None:
    assert parse_limits({"brand": 3000, "contact_writes": 0, "reads": None}) == {"brand": 3000}
    with pytest.raises(ValueError, match="unknown budget 'imports'"):
        parse_limits({"imports": 100})
    with pytest.raises(ValueError, match="whole number"):
        parse_limits({"brand": -5})


def test_every_client_operation_has_its_endpoint_class() -> None:
    source = (Path(qualtrics_module.__file__)).read_text()
    operations = set(re.findall(r'self\._call\("(\w+)"', source))
    assert operations == set(OPERATION_CLASSES)
    assert set(OPERATION_CLASSES.values()) <= set(ENDPOINT_CLASSES)


def test_the_settings_expose_every_budget_and_can_switch_them_off() -> None:
    base = {"ACTION_SLUG": "addContactToXmd", "QUALTRICS_SECRET_ARN": "a", "QUEUE_URL": "q",
            "DEAD_LETTER_QUEUE_URL": "d", "IDEMPOTENCY_TABLE": "t"}
    defaults = WorkerSettings.from_environ(base).rate_limits()
    assert defaults == {"brand": 3000, "contact_writes": 500, "searches": 500, "transactions": 500,
                        "workflows": 500, "reads": 3000}
    assert set(defaults) == {BRAND, *ENDPOINT_CLASSES}
    assert WorkerSettings.from_environ({**base, "RATE_LIMIT_ENABLED": "false"}).rate_limits() == {}
    assert "searches" not in WorkerSettings.from_environ({**base, "RATE_LIMIT_SEARCHES": "0"}).rate_limits()
    for bad in ({"RATE_LIMIT_BRAND": "-1"}, {"RATE_LIMIT_WINDOW_SECONDS": "0"}, {"QUALTRICS_BATCH_CONCURRENCY": "0"},
                {"QUALTRICS_BATCH_CONCURRENCY": "101"}, {"RATE_LIMIT_BRAND": "1e999"}):
        with pytest.raises(SettingsError):
            WorkerSettings.from_environ({**base, **bad})


# --- the limiter -----------------------------------------------------------------------------------

class FakeTime:
    """A clock that sleeping moves on: a limiter's waits take no real time."""

    def __init__(self) -> None:
        self.now = T0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def limiter_with(limits: dict[str, int], window: float = 60.0) -> tuple[RateLimiter, FakeTime, MemoryRateLimitStore]:
    time_, store = FakeTime(), MemoryRateLimitStore()
    limiter = RateLimiter(store, limits, window, clock=time_.clock, sleep=time_.sleep, jitter=lambda: 0.0)
    return limiter, time_, store


def test_a_call_waits_for_its_token_then_goes() -> None:
    limiter, time_, _ = limiter_with({"contact_writes": 10})   # burst 1, one call every 60/9 s
    waits: list[tuple[str, float]] = []
    limiter.on_wait = lambda operation, seconds: waits.append((operation, seconds))
    limiter.before("create_contact")
    assert time_.slept == []
    limiter.before("create_contact")
    assert sum(time_.slept) == pytest.approx(60 / 9, abs=1e-5)
    assert waits == [("create_contact", pytest.approx(60 / 9, abs=1e-5))]


def test_no_token_within_the_time_left_is_rate_limited_with_the_predicted_wait() -> None:
    limiter, time_, _ = limiter_with({"transactions": 10})
    limiter.remaining = lambda: 20.0
    limiter.reserve = 19.5   # half a second to wait, at most
    limiter.before("create_transactions")
    with pytest.raises(RateLimited) as refused:
        limiter.before("create_transactions")
    assert refused.value.budget == "transactions"
    assert refused.value.retry_after == pytest.approx(60 / 9, abs=1e-5)
    assert refused.value.code == "rate_limited" and refused.value.retryable
    assert time_.slept == []


def test_the_brand_budget_spans_every_class() -> None:
    limiter, _, _ = limiter_with({"brand": 10, "contact_writes": 100, "workflows": 100}, window=10.0)
    limiter.max_wait_seconds = 0
    limiter.before("create_contact")     # the brand's burst is 1: this takes it
    with pytest.raises(RateLimited) as refused:
        limiter.before("trigger_workflow")
    assert refused.value.budget == BRAND
    with pytest.raises(RateLimited) as refused:
        limiter.before("search_contacts")   # no class budget for searches: the brand alone decides
    assert refused.value.budget == BRAND


def test_a_brand_refusal_gives_the_class_token_back() -> None:
    limiter, time_, store = limiter_with({"brand": 100, "contact_writes": 100}, window=10.0)
    limiter.max_wait_seconds = 0
    store.drain(BRAND, limiter.budgets[BRAND], time_.now, 5.0)
    for _ in range(10):
        with pytest.raises(RateLimited):
            limiter.before("create_contact")
    # the contact writes budget is untouched: its whole burst is still there
    budget = limiter.budgets["contact_writes"]
    assert [store.take("contact_writes", budget, time_.now) for _ in range(budget.burst)] == [0.0] * budget.burst


def test_an_operation_without_a_budget_is_not_limited() -> None:
    limiter, time_, store = limiter_with({"contact_writes": 1})
    for _ in range(50):
        limiter.before("trigger_workflow")
    assert time_.slept == [] and store.tats == {}


def test_a_429_drains_the_class_bucket_for_every_worker() -> None:
    time_, store = FakeTime(), MemoryRateLimitStore()
    one = RateLimiter(store, {"searches": 500}, clock=time_.clock, sleep=time_.sleep, jitter=lambda: 0.0)
    other = RateLimiter(store, {"searches": 500}, clock=time_.clock, sleep=time_.sleep, jitter=lambda: 0.0)
    one.throttled("search_contacts", 7.0)
    other.before("search_contacts")
    assert sum(time_.slept) == pytest.approx(7.0, abs=1e-6)


def test_a_429_without_retry_after_drains_a_second() -> None:
    limiter, time_, _ = limiter_with({"workflows": 500})
    limiter.throttled("trigger_workflow", None)
    limiter.before("trigger_workflow")
    assert sum(time_.slept) == pytest.approx(1.0, abs=1e-6)


class BrokenStore:
    def take(self, *args):
        raise ConnectionError("DynamoDB unreachable")

    give_back = drain = take


def test_a_broken_store_lets_the_call_go_and_says_so() -> None:
    errors: list[Exception] = []
    limiter = RateLimiter(BrokenStore(), {"brand": 10})
    limiter.on_error = errors.append
    limiter.before("create_contact")
    limiter.throttled("create_contact", 3.0)
    assert [type(e) for e in errors] == [ConnectionError, ConnectionError]


class RecordingStore(MemoryRateLimitStore):
    """The memory store, noting the clock of each admission (what the guarantee is about)."""

    def __init__(self) -> None:
        super().__init__()
        self.admitted: list[float] = []

    def take(self, name, budget, now):
        wait = super().take(name, budget, now)
        if wait == 0.0:
            self.admitted.append(now)
        return wait


def test_threads_sharing_a_limiter_never_overspend() -> None:
    store = RecordingStore()
    limiter = RateLimiter(store, {"contact_writes": 40}, window_seconds=0.4)

    def work() -> None:
        for _ in range(15):
            limiter.before("create_contact")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.admitted) == 120   # every call went, none was refused for good
    assert most_in_any_window(store.admitted, 0.4) <= Budget(40, 0.4).spendable


# --- the client ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sandbox() -> Iterator[QualtricsSandbox]:
    yield from own_sandbox(TOKEN)


@pytest.fixture
def reset(sandbox: QualtricsSandbox) -> QualtricsSandbox:
    sandbox.reset()
    return sandbox


def test_the_client_asks_before_each_call_and_a_429_slows_everyone(reset: QualtricsSandbox) -> None:
    requests.post(reset.base_url + "/_sandbox/limits", json={"contact_writes": 2, "windowSeconds": 60},
                  timeout=5).raise_for_status()
    store = MemoryRateLimitStore()
    asked: list[str] = []

    class Spy(RateLimiter):
        def before(self, operation: str) -> None:
            asked.append(operation)
            super().before(operation)

    limiter = Spy(store, {"contact_writes": 500})
    limiter.max_wait_seconds = 0
    client = QualtricsClient.with_token(TOKEN, "iad1", reset.base_url, limiter=limiter)
    client.create_contact("POOL_SANDBOX", {"extRef": "a"})
    client.create_contact("POOL_SANDBOX", {"extRef": "b"})
    with pytest.raises(RetryableError) as refused:
        client.create_contact("POOL_SANDBOX", {"extRef": "c"})   # the sandbox's own limit: 429 + Retry-After
    assert refused.value.status == 429 and refused.value.retry_after > 1
    assert asked == ["create_contact"] * 3
    # now the shared bucket is drained: the next call does not even reach Qualtrics
    with pytest.raises(RateLimited):
        client.create_contact("POOL_SANDBOX", {"extRef": "d"})
    stats = requests.get(reset.base_url + "/_sandbox/stats", timeout=5).json()
    assert stats["total"] == {"served": 2, "refused": 1, "status429": 1}


def test_a_client_without_a_limiter_calls_as_before(reset: QualtricsSandbox) -> None:
    client = QualtricsClient.with_token(TOKEN, "iad1", reset.base_url)
    assert client.create_contact("POOL_SANDBOX", {"extRef": "a"})


# --- concurrent calls within a batch ---------------------------------------------------------------

class Gathering(AddContactExecutor):
    """Each call waits until ``together`` calls are in flight: the batch only finishes if they overlap."""

    def __init__(self, client: QualtricsClient, together: int, concurrency: int, timeout: float = 10) -> None:
        super().__init__(client, concurrency=concurrency)
        self.barrier = threading.Barrier(together, timeout=timeout)

    def send(self, payload) -> None:
        self.barrier.wait()
        super().send(payload)


def contact_deliveries(count: int) -> list:
    from segment_qualtrics.destination.actions import ContactPayload

    out = []
    for i in range(count):
        d = delivery(message(f"seg-{i}"), sqs_message_id=f"r{i}")
        d.payload = ContactPayload.model_validate({"directoryId": "POOL_SANDBOX", "extRef": f"user-{i}"})
        out.append(d)
    return out


def test_a_batch_sends_its_calls_concurrently_each_with_its_own_outcome(reset: QualtricsSandbox) -> None:
    client = QualtricsClient.with_token(TOKEN, "iad1", reset.base_url)
    executor = Gathering(client, together=5, concurrency=5)
    deliveries = contact_deliveries(10)
    deliveries[3].payload = deliveries[3].payload.model_copy(update={"directoryId": "POOL_MISSING"})
    delivered: list[str] = []
    errors = executor.execute(deliveries, Progress(lambda d: delivered.append(d.sqs_message_id)))
    assert set(errors) == {"r3"} and errors["r3"].status == 404
    assert sorted(delivered) == sorted(f"r{i}" for i in range(10) if i != 3)
    state = requests.get(reset.base_url + "/_sandbox/state", timeout=5).json()
    assert len(state["directories"]["POOL_SANDBOX"]["contacts"]) == 9


def test_concurrency_one_is_one_call_after_another(reset: QualtricsSandbox) -> None:
    client = QualtricsClient.with_token(TOKEN, "iad1", reset.base_url)
    executor = Gathering(client, together=2, concurrency=1, timeout=0.5)
    errors = executor.execute(contact_deliveries(2), Progress())
    # the two calls never overlap: the first waits alone at the barrier, which breaks after its timeout
    assert sorted(errors) == ["r0", "r1"]
    assert all("BrokenBarrierError" in e.message for e in errors.values())


# --- the worker hands a rate-limited message back --------------------------------------------------

class FakeRequeue:
    def __init__(self, broken: bool = False) -> None:
        self.broken = broken
        self.sent: list[tuple[str, dict, int]] = []

    def send(self, body: str, attributes: dict, delay_seconds: int) -> None:
        if self.broken:
            raise ConnectionError("SQS unreachable")
        self.sent.append((body, attributes, delay_seconds))


def rate_limited_setup(max_receives: int = 8, requeue: FakeRequeue | None = None) -> Setup:
    s = Setup(max_attempts=5)
    s.worker.max_receives = max_receives
    s.worker.requeue = requeue if requeue is not None else FakeRequeue()
    s.worker.jitter = lambda: 0.0
    return s


def test_a_rate_limited_message_is_handed_back_with_the_predicted_delay_and_no_attempt() -> None:
    s = rate_limited_setup()
    s.executor.fail("seg-1", RateLimited("contact_writes", 42.3))
    report = s.process(delivery(message("seg-1"), attempt=1))
    assert [(d.sqs_message_id, sec) for d, sec in report.handed_back] == [("sqs-seg-1-1", 43)]
    assert report.failure_ids == ["sqs-seg-1-1"] and not report.retried and not report.dead_lettered
    assert s.visibility.delays == [("rh-sqs-seg-1-1", 43)]
    assert s.outcomes == [("rate_limited", "sqs-seg-1-1", "rate_limited")]
    # the claim is gone: the next attempt is a fresh first attempt, not a second one
    assert s.store.records == {}


def test_from_its_second_receive_a_rate_limited_message_becomes_a_fresh_copy() -> None:
    requeue = FakeRequeue()
    s = rate_limited_setup(requeue=requeue)
    msg = message("seg-1")
    s.executor.fail("seg-1", RateLimited("brand", 3600.0))
    report = s.process(delivery(msg, attempt=2))
    assert report.failure_ids == [] and [sec for _, sec in report.requeued] == [MAX_DELAY_SECONDS]
    assert requeue.sent == [(msg.to_json(), msg.attributes(), MAX_DELAY_SECONDS)]
    assert s.outcomes == [("requeued", "sqs-seg-1-2", "rate_limited")]
    assert not s.dlq.sent


@pytest.mark.parametrize("receives", [1, 5, 7, 8, 50])
def test_a_rate_limited_message_is_never_dead_lettered_however_many_receives(receives: int) -> None:
    s = rate_limited_setup(max_receives=8)
    s.executor.fail("seg-1", RateLimited("contact_writes", 5.0))
    report = s.process(delivery(message("seg-1"), attempt=receives))
    assert not s.dlq.sent and not report.dead_lettered and not report.retried
    assert len(report.handed_back) + len(report.requeued) == 1
    if receives >= 2:
        assert report.requeued   # the copy SQS would dead-letter soon is replaced by a fresh one


def test_a_failed_requeue_falls_back_to_a_hand_back() -> None:
    s = rate_limited_setup(requeue=FakeRequeue(broken=True))
    s.executor.fail("seg-1", RateLimited("contact_writes", 5.0))
    report = s.process(delivery(message("seg-1"), attempt=3))
    assert [d.sqs_message_id for d, _ in report.handed_back] == ["sqs-seg-1-3"] and not s.dlq.sent


def test_rate_limits_do_not_use_up_a_messages_attempts() -> None:
    s = rate_limited_setup(max_receives=1000)
    msg = message("seg-1")
    for receive in range(1, 21):
        s.executor.fail("seg-1", RateLimited("contact_writes", 1.0))
        s.process(delivery(msg, attempt=receive))
    s.executor.fail("seg-1", RetryableError("qualtrics_server_error", "503", status=503))
    report = s.process(delivery(msg, attempt=21))
    assert report.retried and not report.dead_lettered   # the first real attempt: retried, not its 21st


def test_a_recovering_message_keeps_its_uncertain_record_when_rate_limited() -> None:
    s = rate_limited_setup()
    msg = message("seg-1")
    s.executor.fail("seg-1", RetryableError("qualtrics_timeout", "no answer"))
    s.process(delivery(msg, attempt=1))          # its call may have landed: the record stays, uncertain
    s.executor.fail("seg-1", RateLimited("contact_writes", 1.0))
    s.process(delivery(msg, attempt=2))
    s.executor.fail("seg-1", PermanentError("x", "stop"))
    s.process(delivery(msg, attempt=3))
    assert [recovering for call in s.executor.calls for _, recovering in call] == [False, True, True]


def test_dead_letter_attributes_of_other_failures_are_unchanged() -> None:
    s = rate_limited_setup()
    s.executor.fail("seg-1", PermanentError("invalid_payload", "bad"))
    s.process(delivery(message("seg-1")))
    assert json.loads(s.dlq.sent[0][0])["messageId"] == "seg-1"
