"""The contract every RateLimitStore keeps, run against the memory store (tests/unit/test_rate_limit.py) and
the DynamoDB one over HTTP (tests/integration/test_rate_limit.py). A test class inherits it and provides a
``store`` fixture; budget names are unique per test, so one store (one table) serves them all."""

from __future__ import annotations

import itertools
import random

import pytest
from segment_qualtrics.delivery.rate_limit import Budget, RateLimitStore

T0 = 1_800_000_000.0   # epoch seconds, as the workers' clocks give them
_names = itertools.count()


def fresh() -> str:
    return f"budget-{next(_names)}-{random.randrange(10**9)}"


def most_in_any_window(times: list[float], window: float) -> int:
    """The most admissions in any half-open window (t - window, t]."""
    times = sorted(times)
    most, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        most = max(most, end - start + 1)
    return most


class RateLimitStoreContract:
    store: RateLimitStore   # the fixture of the subclass

    def test_a_quiet_budget_admits_its_burst_at_once_then_says_how_long_to_wait(self, store):
        budget, name = Budget(500, 60.0), fresh()
        assert budget.burst == 21 and budget.spendable == 485
        assert [store.take(name, budget, T0) for _ in range(budget.burst)] == [0.0] * budget.burst
        wait = store.take(name, budget, T0)
        assert wait == pytest.approx(budget.interval, abs=1e-5)

    def test_a_refusal_takes_nothing(self, store):
        budget, name = Budget(100, 10.0), fresh()
        assert [store.take(name, budget, T0) for _ in range(budget.burst)] == [0.0] * budget.burst
        first = store.take(name, budget, T0)
        for _ in range(5):
            assert store.take(name, budget, T0) == pytest.approx(first, abs=1e-5)
        assert store.take(name, budget, T0 + first + 1e-4) == 0.0

    def test_the_predicted_wait_is_exact(self, store):
        budget, name = Budget(10, 60.0), fresh()    # spendable 9, burst 1: one call every 60/9 s
        assert budget.burst == 1
        assert store.take(name, budget, T0) == 0.0
        wait = store.take(name, budget, T0 + 0.1)
        assert wait > 0
        assert store.take(name, budget, T0 + 0.1 + wait - 0.01) > 0
        assert store.take(name, budget, T0 + 0.1 + wait + 0.001) == 0.0

    def test_a_busy_budget_admits_one_call_per_interval(self, store):
        budget, name = Budget(120, 60.0), fresh()
        for _ in range(budget.burst):
            assert store.take(name, budget, T0) == 0.0
        for k in range(1, 21):
            now = T0 + k * budget.interval + 1e-4
            assert store.take(name, budget, now) == 0.0
            assert store.take(name, budget, now) > 0

    def test_a_quiet_moment_saves_no_more_than_the_burst(self, store):
        budget, name = Budget(120, 60.0), fresh()
        assert store.take(name, budget, T0) == 0.0
        later, admitted = T0 + 3600, 0
        while store.take(name, budget, later) == 0.0:
            admitted += 1
        assert admitted == budget.burst

    def test_budgets_are_independent(self, store):
        budget, one, other = Budget(50, 60.0), fresh(), fresh()
        while store.take(one, budget, T0) == 0.0:
            pass
        assert store.take(other, budget, T0) == 0.0

    def test_give_back_returns_exactly_one_call(self, store):
        budget, name = Budget(100, 10.0), fresh()
        while store.take(name, budget, T0) == 0.0:
            pass
        store.give_back(name, budget)
        assert store.take(name, budget, T0) == 0.0
        assert store.take(name, budget, T0) > 0

    def test_give_back_on_an_unknown_budget_is_harmless(self, store):
        budget, name = Budget(100, 10.0), fresh()
        store.give_back(name, budget)
        assert store.take(name, budget, T0) == 0.0

    def test_a_drain_admits_nothing_before_it_ends(self, store):
        budget, name = Budget(500, 60.0), fresh()
        store.drain(name, budget, T0, 5.0)
        assert store.take(name, budget, T0) == pytest.approx(5.0, abs=1e-5)
        assert store.take(name, budget, T0 + 4.99) > 0
        assert store.take(name, budget, T0 + 5.0001) == 0.0

    def test_a_shorter_drain_never_shortens_a_longer_one(self, store):
        budget, name = Budget(500, 60.0), fresh()
        store.drain(name, budget, T0, 30.0)
        store.drain(name, budget, T0 + 1, 2.0)
        assert store.take(name, budget, T0 + 10) > 0
        assert store.take(name, budget, T0 + 30.001) == 0.0

    @pytest.mark.parametrize("limit,window", [(10, 1.0), (500, 60.0), (1, 5.0), (37, 2.5)])
    def test_never_more_than_the_budget_in_any_window(self, store, limit, window):
        budget, name, rng = Budget(limit, window), fresh(), random.Random(limit)
        now, admitted = T0, []
        for _ in range(4 * limit + 40):
            now += rng.choice([0.0, 0.0, budget.interval / 3, budget.interval, rng.uniform(0, window / 4)])
            if store.take(name, budget, now) == 0.0:
                admitted.append(now)
        assert len(admitted) > limit    # it did admit: this is no vacuous pass
        assert most_in_any_window(admitted, window) <= budget.spendable <= limit
