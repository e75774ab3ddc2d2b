"""The Qualtrics sandbox's transaction-contacts imports (the bulk path), over real HTTP."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from local.sandbox.qualtrics_sandbox import QualtricsSandbox
from local.sandbox.tests.sandbox_api import SandboxApi, own_sandbox

TOKEN = "imports-test-token"
POOL = "POOL_SANDBOX"
LIST = "CG_SANDBOX"
IMPORTS = f"/API/v3/directories/{POOL}/mailinglists/{LIST}/transactioncontacts"
META = {"batchId": "BT_backfill", "fields": ["orderId", "total"]}
INSTANT = {"contactsPerSecond": 10_000_000}
STALLED = {"contactsPerSecond": 0.001}  # one contact per 1000 s: a job stays where it is during a test


@pytest.fixture(scope="module")
def server() -> Iterator[QualtricsSandbox]:
    yield from own_sandbox(TOKEN)


class Api(SandboxApi):
    token = TOKEN

    def start(self, contacts: list[Any], meta: dict[str, Any] | None = None, path: str = IMPORTS) -> str:
        body: dict[str, Any] = {"contacts": contacts}
        if meta is not None:
            body["transactionMeta"] = meta
        answer = self.call("POST", path, json=body)
        assert answer.status_code == 200, answer.text
        result = answer.json()["result"]
        assert result["id"].startswith("PGR_") and result["tracking"]["url"].endswith(f"{path}/{result['id']}")
        return result["id"]

    def status(self, import_id: str, path: str = IMPORTS) -> dict[str, Any]:
        answer = self.call("GET", f"{path}/{import_id}")
        assert answer.status_code == 200, answer.text
        return answer.json()["result"]

    def summary(self, import_id: str, path: str = IMPORTS) -> dict[str, Any]:
        answer = self.call("GET", f"{path}/{import_id}/summary")
        assert answer.status_code == 200, answer.text
        return answer.json()["result"]

    def wait(self, import_id: str, path: str = IMPORTS) -> dict[str, Any]:
        """Poll until the job ends; the percentage never goes back."""
        seen = []
        for _ in range(500):
            status = self.status(import_id, path)
            seen.append(status["percentComplete"])
            if status["status"] in ("complete", "failed"):
                assert seen == sorted(seen), seen
                return self.summary(import_id, path)
            time.sleep(0.02)
        raise AssertionError(f"import {import_id} did not finish: {seen[-5:]}")

    def admin(self, method: str, what: str, json: Any = None) -> requests.Response:
        return requests.request(method, f"{self.base_url}/_sandbox/{what}", json=json, timeout=10)

    def imports_config(self, **config: Any) -> None:
        answer = self.admin("POST", "imports", config)
        assert answer.status_code == 200, answer.text

    def directory(self, directory: str = POOL) -> dict[str, Any]:
        return self.admin("GET", "state").json()["directories"][directory]


@pytest.fixture
def api(server: QualtricsSandbox) -> Api:
    server.reset()
    return Api(server.base_url)


def _customers(n: int, prefix: str = "u") -> list[dict[str, Any]]:
    return [
        {
            "extRef": f"{prefix}{i}",
            "email": f"{prefix}{i}@example.com",
            "firstName": f"First{i}",
            "embeddedData": {"plan": "pro", "visits": i},
            "transactionData": {"orderId": f"o-{prefix}{i}", "total": i * 1.5},
        }
        for i in range(n)
    ]


# ---- the happy path ------------------------------------------------------------------------


def test_an_import_creates_contacts_and_transactions(api: Api) -> None:
    api.imports_config(contactsPerSecond=200)
    import_id = api.start(_customers(30), META)
    summary = api.wait(import_id)
    assert summary["status"] == "complete" and summary["percentComplete"] == 100
    assert summary["contacts"]["count"] == {"added": 30, "updated": 0, "failed": 0}
    assert summary["contacts"]["unprocessed"] == [] and summary["invalidEmails"] == []
    assert summary["transactions"]["count"] == {"created": 30}
    directory = api.directory()
    by_ref = {c["extRef"]: c for c in directory["contacts"]}
    assert len(by_ref) == 30
    assert by_ref["u7"]["email"] == "u7@example.com"
    assert by_ref["u7"]["embeddedData"] == {"plan": "pro", "visits": "7"}  # embedded data is stored as strings
    transactions = {t["data"]["orderId"]: t for t in directory["transactions"]}
    assert len(transactions) == 30
    assert transactions["o-u7"]["contactId"] == by_ref["u7"]["contactId"]
    assert transactions["o-u7"]["data"] == {"orderId": "o-u7", "total": 10.5}
    assert transactions["o-u7"]["mailingListId"] == LIST and transactions["o-u7"]["batchId"] == "BT_backfill"
    assert transactions["o-u7"]["transactionId"].startswith("CTR_")


def test_contacts_without_transaction_data_need_no_transaction_meta(api: Api) -> None:
    api.imports_config(**INSTANT)
    summary = api.wait(api.start([{"extRef": "plain"}, {"email": "p@example.com", "unsubscribed": True}]))
    assert summary["contacts"]["count"] == {"added": 2, "updated": 0, "failed": 0}
    assert summary["transactions"]["count"] == {"created": 0}
    assert api.directory()["transactions"] == []


def test_progress_advances_with_time_at_the_configured_speed(api: Api) -> None:
    api.imports_config(**STALLED)
    import_id = api.start(_customers(10), META)
    status = api.status(import_id)
    assert (status["status"], status["percentComplete"]) == ("inProgress", 0)
    assert status["contacts"]["count"] == {"added": 0, "updated": 0, "failed": 0}
    assert api.directory()["contacts"] == []  # nothing is applied before it is processed
    api.imports_config(**INSTANT)  # speed it up: the job finishes on the next poll
    assert api.wait(import_id)["contacts"]["count"]["added"] == 10


def test_the_import_endpoints_are_rate_limited_as_imports_and_reads(api: Api) -> None:
    api.imports_config(**INSTANT)
    assert api.admin("POST", "limits", {"imports": 1, "windowSeconds": 30}).status_code == 200
    import_id = api.start(_customers(2), META)
    refused = api.call("POST", IMPORTS, json={"contacts": [{"extRef": "again"}]})
    assert refused.status_code == 429 and float(refused.headers["Retry-After"]) > 0
    assert api.status(import_id)["status"] == "complete"  # polls are reads, not imports
    stats = api.admin("GET", "stats").json()["classes"]
    assert stats["imports"] == {"served": 1, "refused": 1, "statuses": {"200": 1, "429": 1}}
    assert stats["reads"]["served"] == 1


# ---- per-contact rejections ----------------------------------------------------------------


def test_bad_contacts_are_unprocessed_with_their_reason_and_the_rest_load(api: Api) -> None:
    api.imports_config(**INSTANT)
    contacts = [
        {"extRef": "ok0", "transactionData": {"orderId": "1"}},
        {"extRef": "bad1", "email": "not-an-email"},
        {"extRef": "bad2", "firstName": None},
        {"extRef": "bad3", "embeddedData": {"nested": {"a": 1}}},
        {"extRef": "bad4", "transactionData": {"coupon": "X"}},  # not in transactionMeta.fields
        "bad5",
        {"extRef": "bad6", "favouriteColour": "blue"},
        {"extRef": "bad7", "embeddedData": {"total": 3}},  # a transaction field used as embedded data
        {"extRef": "bad8", "unsubscribed": "yes"},
        {"extRef": "ok9", "email": "ok9@example.com", "embeddedData": {"huge": 10**400}},
    ]
    summary = api.wait(api.start(contacts, META))
    assert summary["status"] == "complete"
    assert summary["contacts"]["unprocessed"] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert summary["contacts"]["count"] == {"added": 2, "updated": 0, "failed": 8}
    reasons = {e["index"]: e for e in summary["contacts"]["errors"]}
    assert reasons[1]["errorCode"] == "INVALID_EMAIL" and "not-an-email" in reasons[1]["errorMessage"]
    assert "firstName" in reasons[2]["errorMessage"] and "null" in reasons[2]["errorMessage"]
    assert "embeddedData.nested" in reasons[3]["errorMessage"]
    assert reasons[4]["errorCode"] == "INVALID_TRANSACTION_DATA" and "coupon" in reasons[4]["errorMessage"]
    assert "favouriteColour" in reasons[6]["errorMessage"]
    assert all(e["errorMessage"] for e in reasons.values())
    assert summary["invalidEmails"] == ["not-an-email"]
    assert summary["transactions"]["count"] == {"created": 1}
    assert sorted(c["extRef"] for c in api.directory()["contacts"]) == ["ok0", "ok9"]
    assert api.status(api.admin("GET", "imports").json()["jobs"][0]["id"])["contacts"]["unprocessed"] == [
        1, 2, 3, 4, 5, 6, 7, 8,
    ]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=10,
)
contact_like = st.dictionaries(
    st.sampled_from(["extRef", "email", "firstName", "embeddedData", "transactionData", "unsubscribed", "x"]),
    json_values,
    max_size=5,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(contact_like | json_values, min_size=1, max_size=8))
def test_any_contacts_are_each_either_loaded_or_unprocessed(api: Api, contacts: list[Any]) -> None:
    api.admin("POST", "reset")
    api.imports_config(**INSTANT)
    answer = api.call("POST", IMPORTS, json={"contacts": contacts, "transactionMeta": META})
    assert answer.status_code == 200, answer.text
    summary = api.wait(answer.json()["result"]["id"])
    counts = summary["contacts"]["count"]
    assert counts["added"] + counts["updated"] + counts["failed"] == len(contacts)
    assert len(summary["contacts"]["unprocessed"]) == counts["failed"]
    assert all(0 <= i < len(contacts) for i in summary["contacts"]["unprocessed"])


# ---- whole-request refusals ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"contacts": []}, "non-empty"),
        ({}, "contacts"),
        ({"contacts": {"extRef": "x"}}, "non-empty list"),
        ({"contacts": [{"extRef": "x", "transactionData": {"a": 1}}]}, "transactionMeta"),
        ({"contacts": [{"extRef": "x"}], "transactionMeta": {"fields": ["a"]}}, "batchId"),
        ({"contacts": [{"extRef": "x"}], "transactionMeta": {"batchId": "B", "fields": "a"}}, "fields"),
        ({"contacts": [{"extRef": "x"}], "transactionMeta": {"batchId": "B", "fields": [], "x": 1}}, "transactionMeta"),
        ({"contacts": [{"extRef": "x"}], "mailingListId": "CG_1"}, "mailingListId"),
        ([{"extRef": "x"}], "JSON object"),
    ],
)
def test_a_malformed_import_is_a_400_and_starts_no_job(api: Api, body: Any, message: str) -> None:
    answer = api.call("POST", IMPORTS, json=body)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["meta"]["error"]["errorMessage"]
    assert api.admin("GET", "imports").json()["jobs"] == []


def test_more_than_10000_contacts_is_a_400(api: Api) -> None:
    contacts = [{"extRef": f"e{i}"} for i in range(10_001)]
    answer = api.call("POST", IMPORTS, json={"contacts": contacts})
    assert answer.status_code == 400
    assert "10000" in answer.json()["meta"]["error"]["errorMessage"]
    api.imports_config(**INSTANT)
    assert api.wait(api.start(contacts[:10_000]))["contacts"]["count"]["added"] == 10_000


def test_a_body_over_5_mb_is_a_413(api: Api) -> None:
    padding = "x" * 1000
    contacts = [{"extRef": f"big{i}", "embeddedData": {"note": padding}} for i in range(5300)]
    body = json.dumps({"contacts": contacts})
    assert len(body) > 5 * 1024 * 1024
    answer = api.call("POST", IMPORTS, data=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 413
    assert answer.json()["meta"]["error"]["errorCode"] == "PAYLOAD_TOO_LARGE"
    assert api.admin("GET", "imports").json()["jobs"] == []


def test_a_declared_body_far_too_large_is_refused_unread(api: Api) -> None:
    host, port = api.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(
            f"POST {IMPORTS} HTTP/1.1\r\nHost: x\r\nX-API-TOKEN: {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {10**12}\r\n\r\n{{".encode()
        )
        reply = conn.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 413"), reply
    assert api.call("GET", "/API/v3/whoami").status_code == 200  # the server is still fine


@pytest.mark.parametrize("path", [IMPORTS, f"/API/v3/directories/{POOL}/contacts"])
def test_a_too_deeply_nested_body_is_a_400_not_a_dropped_connection(api: Api, path: str) -> None:
    body = '{"contacts": ' + "[" * 200_000 + "]" * 200_000 + "}"
    answer = api.call("POST", path, data=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    assert "not valid JSON" in answer.json()["meta"]["error"]["errorMessage"]
    assert api.call("GET", "/API/v3/whoami").status_code == 200


def test_unknown_ids_complete_with_zero_counts_as_qualtrics_does(api: Api) -> None:
    # Qualtrics documents that an import into an unknown directory, list or batch completes with all-zero counts.
    api.imports_config(**INSTANT)
    for path in (
        f"/API/v3/directories/{POOL}/mailinglists/CG_NOPE/transactioncontacts",
        "/API/v3/directories/POOL_NOPE/mailinglists/CG_NOPE/transactioncontacts",
    ):
        summary = api.wait(api.start(_customers(3), META, path=path), path=path)
        assert summary["status"] == "complete" and summary["percentComplete"] == 100
        assert summary["contacts"]["count"] == {"added": 0, "updated": 0, "failed": 0}
        assert summary["transactions"]["count"] == {"created": 0}
    assert api.directory()["contacts"] == []


def test_an_unknown_import_id_is_a_404(api: Api) -> None:
    api.imports_config(**INSTANT)
    import_id = api.start([{"extRef": "a"}])
    assert api.call("GET", f"{IMPORTS}/PGR_unknown").status_code == 404
    assert api.call("GET", f"{IMPORTS}/PGR_unknown/summary").status_code == 404
    other_list = f"/API/v3/directories/{POOL}/mailinglists/CG_OTHER/transactioncontacts/{import_id}"
    assert api.call("GET", other_list).status_code == 404


def test_imports_need_the_token(api: Api) -> None:
    answer = requests.post(api.base_url + IMPORTS, json={"contacts": [{"extRef": "a"}]}, timeout=10)
    assert answer.status_code == 401


# ---- concurrent jobs -----------------------------------------------------------------------


def test_jobs_past_the_concurrency_limit_wait_and_past_the_queue_limit_are_429(api: Api) -> None:
    api.imports_config(maxConcurrentJobs=2, maxQueuedJobs=3, **STALLED)
    ids = [api.start([{"extRef": f"j{n}-{i}"} for i in range(3)]) for n in range(3)]
    assert [api.status(i)["status"] for i in ids] == ["inProgress", "inProgress", "queued"]
    refused = api.call("POST", IMPORTS, json={"contacts": [{"extRef": "one-too-many"}]})
    assert refused.status_code == 429, refused.text
    assert float(refused.headers["Retry-After"]) > 0
    assert "import jobs" in refused.json()["meta"]["error"]["errorMessage"]
    api.imports_config(**INSTANT)
    assert all(api.wait(i)["contacts"]["count"]["added"] == 3 for i in ids)
    assert api.wait(api.start([{"extRef": "after"}]))["status"] == "complete"  # room again
    assert len(api.directory()["contacts"]) == 10


def test_the_default_limits_are_the_documented_ones(api: Api) -> None:
    config = api.admin("GET", "imports").json()["config"]
    assert config["maxConcurrentJobs"] == 25 and config["maxQueuedJobs"] == 100


def test_a_queued_job_runs_once_a_slot_frees(api: Api) -> None:
    api.imports_config(maxConcurrentJobs=1, maxQueuedJobs=5, contactsPerSecond=100)
    first = api.start([{"extRef": f"q1-{i}"} for i in range(5)])
    second = api.start([{"extRef": f"q2-{i}"} for i in range(5)])
    assert api.status(second)["status"] in ("queued", "inProgress", "complete")
    assert api.wait(first)["status"] == "complete"
    assert api.wait(second)["contacts"]["count"]["added"] == 5


@pytest.mark.parametrize(
    "config",
    [
        {"contactsPerSecond": 0},
        {"contactsPerSecond": True},
        {"contactsPerSecond": 10**400},
        {"maxQueuedJobs": 10**400},
        {"maxConcurrentJobs": 0},
        {"maxConcurrentJobs": 2.5},
        {"maxQueuedJobs": 1, "maxConcurrentJobs": 2},
        {"speed": 5},
        [],
    ],
)
def test_a_bad_imports_config_is_a_400(api: Api, config: Any) -> None:
    answer = api.admin("POST", "imports", config)
    assert answer.status_code == 400 and answer.json()["error"]
    assert api.admin("GET", "imports").json()["config"]["maxConcurrentJobs"] == 25


# ---- an import that fails as a whole -------------------------------------------------------


def _fail_next_import(api: Api, **extra: Any) -> None:
    spec = {"pathPattern": "/transactioncontacts$", "method": "POST", "status": 0, **extra}
    answer = api.admin("POST", "faults", spec)
    assert answer.status_code == 200, answer.text


def test_an_import_can_fail_as_a_whole(api: Api) -> None:
    api.imports_config(**INSTANT)
    _fail_next_import(api, failImport="Import failed: internal error.")
    import_id = api.start(_customers(4), META)  # accepted: the failure comes later, while it runs
    summary = api.wait(import_id)
    assert summary["status"] == "failed"
    assert summary["error"] == {"errorCode": "IMPORT_FAILED", "errorMessage": "Import failed: internal error."}
    assert summary["percentComplete"] == 0
    assert summary["contacts"]["count"] == {"added": 0, "updated": 0, "failed": 0}
    assert api.directory()["contacts"] == [] and api.directory()["transactions"] == []
    assert api.wait(api.start(_customers(4), META))["status"] == "complete"  # the fault hit once


def test_an_import_can_fail_part_way(api: Api) -> None:
    api.imports_config(**INSTANT)
    _fail_next_import(api, failImport="Lost the worker.", failImportAtPercent=50)
    summary = api.wait(api.start(_customers(4), META))
    assert (summary["status"], summary["percentComplete"]) == ("failed", 50)
    assert summary["contacts"]["count"]["added"] == 2
    assert sorted(c["extRef"] for c in api.directory()["contacts"]) == ["u0", "u1"]


@pytest.mark.parametrize(
    "extra",
    [
        {"failImport": ""},
        {"failImport": 5},
        {"failImport": "x", "failImportAtPercent": 101},
        {"failImportAtPercent": -1},
    ],
)
def test_a_bad_import_fault_is_a_400(api: Api, extra: dict[str, Any]) -> None:
    spec = {"pathPattern": "/transactioncontacts$", "status": 0, **extra}
    assert api.admin("POST", "faults", spec).status_code == 400


# ---- dedup -----------------------------------------------------------------------------------


def test_an_import_merges_into_an_existing_contact_by_the_directory_rule(api: Api) -> None:
    api.imports_config(**INSTANT)
    created = api.call("POST", f"/API/v3/directories/{POOL}/contacts", json={
        "extRef": "known", "firstName": "Old", "embeddedData": {"keep": "yes", "plan": "free"},
    })
    contact_id = created.json()["result"]["id"]
    contacts = [
        {"extRef": " KNOWN ", "firstName": "New", "embeddedData": {"plan": "pro"}, "transactionData": {"orderId": "1"}},
        {"extRef": "fresh", "transactionData": {"orderId": "2"}},
        {"extRef": "Fresh", "lastName": "Twice", "transactionData": {"orderId": "3"}},  # same import, same person
    ]
    summary = api.wait(api.start(contacts, META))
    assert summary["contacts"]["count"] == {"added": 1, "updated": 2, "failed": 0}
    directory = api.directory()
    assert len(directory["contacts"]) == 2
    known = next(c for c in directory["contacts"] if c["contactId"] == contact_id)
    assert known["firstName"] == "New" and known["embeddedData"] == {"keep": "yes", "plan": "pro"}
    fresh = next(c for c in directory["contacts"] if c["contactId"] != contact_id)
    assert fresh["lastName"] == "Twice"
    owners = {t["data"]["orderId"]: t["contactId"] for t in directory["transactions"]}
    assert owners == {"1": contact_id, "2": fresh["contactId"], "3": fresh["contactId"]}  # an extra transaction each
    # the live create-contact path then finds the same contact
    again = api.call("POST", f"/API/v3/directories/{POOL}/contacts", json={"extRef": "FRESH"})
    assert again.json()["result"]["id"] == fresh["contactId"]


def test_an_import_follows_each_directorys_own_criteria(api: Api) -> None:
    api.imports_config(**INSTANT)
    for spec in (
        {"directoryId": "POOL_EMAIL", "deduplicationCriteria": {"email": True}, "mailingLists": ["CG_E"]},
        {"directoryId": "POOL_NONE", "mailingLists": ["CG_N"]},
    ):
        assert api.admin("POST", "directories", spec).status_code == 200
    people = [
        {"email": "Same@Example.com", "extRef": "a"},
        {"email": "same@example.com", "extRef": "b"},
        {"extRef": "no-email"},
    ]
    by_email = "/API/v3/directories/POOL_EMAIL/mailinglists/CG_E/transactioncontacts"
    summary = api.wait(api.start(people, path=by_email), path=by_email)
    assert summary["contacts"]["count"] == {"added": 2, "updated": 1, "failed": 0}
    assert len(api.directory("POOL_EMAIL")["contacts"]) == 2
    no_dedup = "/API/v3/directories/POOL_NONE/mailinglists/CG_N/transactioncontacts"
    summary = api.wait(api.start(people + people, path=no_dedup), path=no_dedup)
    assert summary["contacts"]["count"] == {"added": 6, "updated": 0, "failed": 0}


# ---- admin -----------------------------------------------------------------------------------


def test_reset_drops_jobs_and_restores_the_start_settings() -> None:
    with QualtricsSandbox(TOKEN, imports={"maxConcurrentJobs": 3, "contactsPerSecond": 0.001}) as sandbox:
        api = Api(sandbox.base_url)
        api.start([{"extRef": "r"}])
        api.imports_config(**INSTANT)
        sandbox.reset()
        listing = api.admin("GET", "imports").json()
        assert listing["jobs"] == []
        assert listing["config"] == {"contactsPerSecond": 0.001, "maxConcurrentJobs": 3, "maxQueuedJobs": 100}


def test_dedup_sees_contacts_seeded_or_replaced_through_the_admin_endpoint(api: Api) -> None:
    api.imports_config(**INSTANT)
    contacts = f"/API/v3/directories/{POOL}/contacts"
    assert api.call("POST", contacts, json={"extRef": "warm"}).status_code == 200  # the index exists now
    assert api.admin("POST", "contacts", {"contactId": "CID_SEEDED", "extRef": "seeded"}).status_code == 200
    summary = api.wait(api.start([{"extRef": "SEEDED", "firstName": "Imported"}]))
    assert summary["contacts"]["count"] == {"added": 0, "updated": 1, "failed": 0}
    # Replace the seeded contact under the same id: its old extRef no longer finds it, the new one does.
    assert api.admin("POST", "contacts", {"contactId": "CID_SEEDED", "extRef": "renamed"}).status_code == 200
    assert api.call("POST", contacts, json={"extRef": "renamed"}).json()["result"]["id"] == "CID_SEEDED"
    assert api.call("POST", contacts, json={"extRef": "seeded"}).json()["result"]["id"] != "CID_SEEDED"
