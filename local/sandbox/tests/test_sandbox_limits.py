"""The Qualtrics sandbox's rate limits, added latency and counts, over real HTTP."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from local.sandbox.qualtrics_sandbox import QualtricsSandbox
from local.sandbox.sandbox_limits import Latency, endpoint_class, parse_latency
from local.sandbox.tests.sandbox_api import SandboxApi, own_sandbox

TOKEN = "limits-test-token"
POOL = "POOL_SANDBOX"
CONTACTS = f"/API/v3/directories/{POOL}/contacts"
SEARCH = f"{CONTACTS}/search"
TRANSACTIONS = f"/API/v3/directories/{POOL}/transactions"
WORKFLOW = "/inbound-event/v1/events/json/triggers?urlTokenId=limits"
REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def server() -> Iterator[QualtricsSandbox]:
    yield from own_sandbox(TOKEN)


class Api(SandboxApi):
    token = TOKEN

    def create(self, ext_ref: str) -> requests.Response:
        return self.call("POST", CONTACTS, json={"extRef": ext_ref})

    def search(self) -> requests.Response:
        return self.call("POST", SEARCH, json={"filter": {"filterType": "extRef", "comparison": "eq", "value": "x"}})

    def admin(self, method: str, what: str, json: Any = None) -> requests.Response:
        return requests.request(method, f"{self.base_url}/_sandbox/{what}", json=json, timeout=10)

    def limits(self, **budgets: Any) -> None:
        answer = self.admin("POST", "limits", budgets)
        assert answer.status_code == 200, answer.text

    def stats(self) -> dict[str, Any]:
        return self.admin("GET", "stats").json()

    def contacts(self) -> list[dict[str, Any]]:
        return self.admin("GET", "state").json()["directories"][POOL]["contacts"]


@pytest.fixture
def api(server: QualtricsSandbox) -> Api:
    server.reset()
    return Api(server.base_url)


def _assert_rate_limited(response: requests.Response, budget: str) -> float:
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["meta"]["httpStatus"] == "429 - Too Many Requests"
    assert body["meta"]["error"]["errorCode"] == "TOO_MANY_REQUESTS"
    assert budget in body["meta"]["error"]["errorMessage"]
    assert body["meta"]["requestId"]
    retry_after = float(response.headers["Retry-After"])
    assert retry_after > 0
    return retry_after


# ---- defaults ------------------------------------------------------------------------------


def test_no_limits_and_no_latency_by_default(api: Api) -> None:
    assert api.admin("GET", "limits").json() == {"limits": {"windowSeconds": 60.0}}
    assert api.admin("GET", "latency").json()["latency"] == {
        "seconds": 0.0,
        "classes": {},
        "jitterSeconds": 0.0,
        "seed": None,
    }
    assert all(api.create(f"d{i}").status_code == 200 for i in range(60))


# ---- limits --------------------------------------------------------------------------------


def test_the_call_past_the_budget_gets_429_with_retry_after(api: Api) -> None:
    api.limits(contact_writes=3, windowSeconds=30)
    assert [api.create(f"c{i}").status_code for i in range(3)] == [200, 200, 200]
    refused = api.create("c3")
    retry_after = _assert_rate_limited(refused, "contact_writes")
    assert retry_after <= 30
    assert "c3" not in {c["extRef"] for c in api.contacts()}  # refused before it was applied


def test_retry_after_is_whole_seconds_at_real_time_scale(api: Api) -> None:
    api.limits(contact_writes=1)  # per minute
    api.create("first")
    refused = api.create("second")
    _assert_rate_limited(refused, "contact_writes")
    assert re.fullmatch(r"[1-9]\d*", refused.headers["Retry-After"])
    assert int(refused.headers["Retry-After"]) <= 60


def test_the_window_slides_a_refused_call_succeeds_after_retry_after(api: Api) -> None:
    api.limits(contact_writes=2, windowSeconds=0.5)
    assert api.create("a").status_code == 200
    assert api.create("b").status_code == 200
    retry_after = _assert_rate_limited(api.create("c"), "contact_writes")
    time.sleep(retry_after)
    assert api.create("c").status_code == 200


def test_a_class_budget_leaves_other_classes_alone(api: Api) -> None:
    api.limits(contact_writes=1, windowSeconds=30)
    assert api.create("one").status_code == 200
    _assert_rate_limited(api.create("two"), "contact_writes")
    assert api.search().status_code == 200
    assert api.call("GET", "/API/v3/whoami").status_code == 200
    assert api.call("POST", WORKFLOW, json={"event": "x"}).status_code == 200


def test_every_endpoint_class_has_its_own_budget(api: Api) -> None:
    api.limits(contact_writes=1, searches=1, transactions=1, workflows=1, reads=1, windowSeconds=30)
    contact_id = api.create("tx").json()["result"]["id"]
    calls = {
        "searches": lambda: api.search(),
        "transactions": lambda: api.call(
            "POST", TRANSACTIONS, json={"k": {"contactId": contact_id, "mailingListId": "CG_SANDBOX"}}
        ),
        "workflows": lambda: api.call("POST", WORKFLOW, json={"event": "x"}),
        "reads": lambda: api.call("GET", f"{CONTACTS}/{contact_id}"),
    }
    for name, call in calls.items():
        assert call().status_code == 200, name
        _assert_rate_limited(call(), name)
    assert api.stats()["refusedBy"] == dict.fromkeys(["reads", "searches", "transactions", "workflows"], 1)


def test_the_brand_wide_total_counts_every_class(api: Api) -> None:
    api.limits(brand=4, windowSeconds=30)
    assert api.create("b1").status_code == 200
    assert api.create("b2").status_code == 200
    assert api.search().status_code == 200
    assert api.call("GET", "/API/v3/whoami").status_code == 200
    _assert_rate_limited(api.call("POST", WORKFLOW, json={"event": "x"}), "brand-wide")
    _assert_rate_limited(api.create("b3"), "brand-wide")
    assert api.stats()["refusedBy"] == {"brand": 2}


def test_a_refused_call_spends_no_budget(api: Api) -> None:
    # The class is full; the refused calls must not eat the brand budget the other classes share.
    api.limits(brand=3, contact_writes=1, windowSeconds=30)
    assert api.create("x1").status_code == 200
    for i in range(5):
        _assert_rate_limited(api.create(f"x{i + 2}"), "contact_writes")
    assert api.search().status_code == 200
    assert api.search().status_code == 200
    _assert_rate_limited(api.search(), "brand-wide")


def test_concurrent_callers_never_get_more_than_the_budget(api: Api) -> None:
    api.limits(contact_writes=25, brand=40, windowSeconds=60)
    statuses: list[int] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        session = Api(api.base_url)
        for i in range(12):
            status = session.create(f"t{n}-{i}").status_code
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Counter(statuses) == {200: 25, 429: 71}
    assert len(api.contacts()) == 25
    stats = api.stats()["classes"]["contact_writes"]
    assert (stats["served"], stats["refused"]) == (25, 71)


def test_limits_can_be_set_at_start_and_reset_returns_to_them() -> None:
    with QualtricsSandbox(TOKEN, limits={"contact_writes": 1, "windowSeconds": 30}) as sandbox:
        api = Api(sandbox.base_url)
        assert api.create("s1").status_code == 200
        _assert_rate_limited(api.create("s2"), "contact_writes")
        api.limits(contact_writes=100)  # runtime change: replaces every budget, windows start afresh
        assert api.admin("GET", "limits").json()["limits"] == {"contact_writes": 100, "windowSeconds": 60.0}
        assert api.create("s2").status_code == 200
        sandbox.reset()
        assert api.admin("GET", "limits").json()["limits"] == {"contact_writes": 1, "windowSeconds": 30.0}
        assert api.create("s3").status_code == 200
        _assert_rate_limited(api.create("s4"), "contact_writes")
        assert api.admin("DELETE", "limits").json()["limits"] == {"windowSeconds": 60.0}
        assert api.create("s4").status_code == 200


@pytest.mark.parametrize(
    "spec",
    [
        {"contact_writes": -1},
        {"contact_writes": 1.5},
        {"contact_writes": True},
        {"contact_writes": "500"},
        {"contact_writes": 10**12},
        {"contact_writes": 10**400},
        {"nope": 1},
        {"windowSeconds": 0},
        {"windowSeconds": -5},
        {"windowSeconds": 10**9},
        [],
        "brand",
    ],
)
def test_a_bad_limits_config_is_a_400_and_changes_nothing(api: Api, spec: Any) -> None:
    api.limits(brand=7)
    answer = api.admin("POST", "limits", spec)
    assert answer.status_code == 400 and answer.json()["error"]
    assert api.admin("GET", "limits").json()["limits"] == {"brand": 7, "windowSeconds": 60.0}


def test_a_null_budget_means_unlimited(api: Api) -> None:
    api.limits(contact_writes=None, searches=0)
    assert api.create("n").status_code == 200
    _assert_rate_limited(api.search(), "searches")  # 0: every call refused


def test_a_bad_start_config_raises() -> None:
    with pytest.raises(ValueError, match="unknown limit"):
        QualtricsSandbox(TOKEN, limits={"contacts": 5})
    with pytest.raises(ValueError, match="jitterSeconds"):
        QualtricsSandbox(TOKEN, latency={"jitterSeconds": -1})
    with pytest.raises(ValueError, match="SANDBOX_LIMITS"):
        QualtricsSandbox.options_from_environment({"SANDBOX_LIMITS": "{brand: 5"})
    with pytest.raises(ValueError, match="SANDBOX_IMPORTS: unknown imports field 'speed'"):
        QualtricsSandbox.options_from_environment({"SANDBOX_IMPORTS": '{"speed": 5}'})


def test_options_come_from_the_environment() -> None:
    environ = {
        "SANDBOX_LIMITS": '{"brand": 3000, "contact_writes": 500}',
        "SANDBOX_LATENCY": '{"seconds": 0.25}',
        "SANDBOX_IMPORTS": " ",
    }
    assert QualtricsSandbox.options_from_environment(environ) == {
        "limits": {"brand": 3000, "contact_writes": 500},
        "latency": {"seconds": 0.25},
    }


def test_the_cli_takes_limits_from_the_environment() -> None:
    env = {**os.environ, "SANDBOX_LIMITS": '{"reads": 1, "windowSeconds": 30}'}
    process = subprocess.Popen(
        [sys.executable, "-m", "local.sandbox.qualtrics_sandbox", "--port", "0", "--token", TOKEN, "--quiet"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        url = re.search(r"http://127\.0\.0\.1:\d+", process.stdout.readline())
        assert url
        api = Api(url.group())
        assert api.call("GET", "/API/v3/whoami").status_code == 200
        _assert_rate_limited(api.call("GET", "/API/v3/whoami"), "reads")
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_endpoint_classes() -> None:
    d = "/API/v3/directories/POOL_X"
    assert endpoint_class("POST", f"{d}/contacts") == "contact_writes"
    assert endpoint_class("PUT", f"{d}/contacts/CID_1") == "contact_writes"
    assert endpoint_class("POST", f"{d}/mailinglists/CG_1/contacts") == "contact_writes"
    assert endpoint_class("POST", f"{d}/contacts/search") == "searches"
    assert endpoint_class("POST", f"{d}/transactions") == "transactions"
    assert endpoint_class("POST", f"{d}/transactionbatches") == "transactions"
    assert endpoint_class("POST", "/inbound-event/v1/events/JSON/triggers") == "workflows"
    assert endpoint_class("POST", f"{d}/mailinglists/CG_1/transactioncontacts") == "imports"
    assert endpoint_class("GET", f"{d}/mailinglists/CG_1/transactioncontacts/PGR_1") == "reads"
    assert endpoint_class("GET", f"{d}/transactionbatches") == "reads"
    assert endpoint_class("DELETE", f"{d}/contacts/CID_1") == "contact_writes"   # deleteContact
    assert endpoint_class("DELETE", f"{d}/faults") == "other"


# ---- latency -------------------------------------------------------------------------------


def test_fixed_latency_delays_every_call(api: Api) -> None:
    assert api.admin("POST", "latency", {"seconds": 0.2}).status_code == 200
    for call in (lambda: api.call("GET", "/API/v3/whoami"), lambda: api.create("slow")):
        started = time.monotonic()
        assert call().status_code == 200
        assert time.monotonic() - started >= 0.2


def test_latency_per_class_overrides_the_fixed_one(api: Api) -> None:
    api.admin("POST", "latency", {"seconds": 0.05, "classes": {"searches": 0.3}})
    started = time.monotonic()
    assert api.search().status_code == 200
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    assert api.call("GET", "/API/v3/whoami").status_code == 200
    assert time.monotonic() - started >= 0.05


def test_latency_applies_to_refused_calls_too(api: Api) -> None:
    api.limits(contact_writes=0)
    api.admin("POST", "latency", {"classes": {"contact_writes": 0.2}})
    started = time.monotonic()
    _assert_rate_limited(api.create("late"), "contact_writes")
    assert time.monotonic() - started >= 0.2


def test_latency_at_start_and_reset_returns_to_it() -> None:
    with QualtricsSandbox(TOKEN, latency={"seconds": 0.15}) as sandbox:
        api = Api(sandbox.base_url)
        started = time.monotonic()
        api.call("GET", "/API/v3/whoami")
        assert time.monotonic() - started >= 0.15
        assert api.admin("DELETE", "latency").json()["latency"]["seconds"] == 0
        sandbox.reset()
        assert api.admin("GET", "latency").json()["latency"]["seconds"] == 0.15


def test_jitter_is_reproducible_with_a_seed_and_never_below_the_base() -> None:
    config = parse_latency({"seconds": 0.1, "jitterSeconds": 0.05, "seed": 7})
    one, two = Latency(config), Latency(config)
    first = [one.delay("reads") for _ in range(50)]
    assert first == [two.delay("reads") for _ in range(50)]
    assert all(0.1 <= d <= 0.15 for d in first) and len(set(first)) > 1


@pytest.mark.parametrize(
    "spec",
    [
        {"seconds": -0.1},
        {"seconds": 61},
        {"seconds": 10**400},
        {"seed": 10**400},
        {"seed": 1.5},
        {"classes": {"nope": 1}},
        {"classes": []},
        {"x": 1},
        [1],
    ],
)
def test_a_bad_latency_config_is_a_400(api: Api, spec: Any) -> None:
    answer = api.admin("POST", "latency", spec)
    assert answer.status_code == 400 and answer.json()["error"]
    assert api.admin("GET", "latency").json()["latency"]["seconds"] == 0


# ---- counts --------------------------------------------------------------------------------


def test_stats_count_served_and_refused_per_class(api: Api) -> None:
    api.limits(contact_writes=2, windowSeconds=30)
    for i in range(5):
        api.create(f"s{i}")
    api.search()
    api.call("GET", "/API/v3/whoami")
    api.call("GET", f"{CONTACTS}/CID_missing")  # 404: served, not refused
    requests.post(api.base_url + "/_sandbox/faults", json={"pathPattern": "search$", "status": 429}, timeout=5)
    api.search()  # a fault's 429 is counted as a 429, not as a limiter refusal
    stats = api.stats()
    assert stats["classes"]["contact_writes"] == {"served": 2, "refused": 3, "statuses": {"200": 2, "429": 3}}
    assert stats["classes"]["searches"] == {"served": 2, "refused": 0, "statuses": {"200": 1, "429": 1}}
    assert stats["classes"]["reads"] == {"served": 2, "refused": 0, "statuses": {"200": 1, "404": 1}}
    assert stats["total"] == {"served": 6, "refused": 3, "status429": 4}
    assert stats["refusedBy"] == {"contact_writes": 3}


def test_reset_zeroes_the_counts(api: Api) -> None:
    api.create("r")
    assert api.stats()["total"]["served"] == 1
    assert api.admin("POST", "reset").status_code == 200
    assert api.stats() == {"classes": {}, "total": {"served": 0, "refused": 0, "status429": 0}, "refusedBy": {}}


def test_the_local_stack_passes_the_environment_to_its_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    from local.stack import LocalStack

    monkeypatch.delenv("QUALTRICS_API_TOKEN", raising=False)
    monkeypatch.setenv("SANDBOX_LIMITS", '{"brand": 3000, "contact_writes": 500}')
    monkeypatch.setenv("SANDBOX_LATENCY", '{"seconds": 0.01}')
    monkeypatch.setenv("SANDBOX_IMPORTS", '{"maxConcurrentJobs": 5}')
    stack = LocalStack(http_port=0, sandbox_port=0, on_line=lambda _: None)
    qualtrics = stack._start_qualtrics()  # only the sandbox: no moto, no functions
    try:
        base = qualtrics["baseUrl"]
        limits = requests.get(base + "/_sandbox/limits", timeout=5).json()["limits"]
        assert limits == {"brand": 3000, "contact_writes": 500, "windowSeconds": 60.0}
        assert requests.get(base + "/_sandbox/latency", timeout=5).json()["latency"]["seconds"] == 0.01
        assert requests.get(base + "/_sandbox/imports", timeout=5).json()["config"]["maxConcurrentJobs"] == 5
    finally:
        stack.sandbox.stop()
