"""Integration tests for the local Qualtrics sandbox (local/sandbox/qualtrics_sandbox.py), over real HTTP."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from segment_qualtrics.adapters import qualtrics
from segment_qualtrics.adapters.qualtrics import QualtricsClient, QualtricsCredentials
from segment_qualtrics.destination.errors import PermanentError

from local.sandbox.qualtrics_sandbox import QualtricsSandbox
from local.sandbox.tests.sandbox_api import own_sandbox

TOKEN = "sandbox-test-token"
POOL = "POOL_SANDBOX"
LIST = "CG_SANDBOX"
CONTACTS = f"/API/v3/directories/{POOL}/contacts"
SEARCH = f"{CONTACTS}/search"
TRANSACTIONS = f"/API/v3/directories/{POOL}/transactions"
WORKFLOW = "/inbound-event/v1/events/json/triggers"
REPO_ROOT = Path(__file__).resolve().parents[3]
WHOAMI_FIELDS = "brandId userId userName accountType firstName lastName email datacenter".split()
SEEDED_CRITERIA = {
    "email": False,
    "firstName": False,
    "lastName": False,
    "externalDataReference": True,
    "phone": False,
}


@pytest.fixture(scope="module")
def server() -> Iterator[QualtricsSandbox]:
    yield from own_sandbox(TOKEN)


@pytest.fixture
def sandbox(server: QualtricsSandbox) -> QualtricsSandbox:
    server.reset()
    return server


class Api:
    """Tiny client: base URL + token, so tests read like the calls they make."""

    def __init__(self, base_url: str, token: str | None = TOKEN) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        if token is not None:
            self.session.headers["X-API-TOKEN"] = token

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(self.base_url + path, timeout=10, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 10)
        return self.session.post(self.base_url + path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.delete(self.base_url + path, timeout=10, **kwargs)

    # helpers for the common calls
    def create_contact(self, directory: str = POOL, **fields: Any) -> str:
        response = self.post(f"/API/v3/directories/{directory}/contacts", json=fields)
        assert response.status_code == 200, response.text
        return response.json()["result"]["id"]

    def search(self, filter_: Any, params: dict[str, str] | None = None) -> requests.Response:
        return self.post(SEARCH, json={"filter": filter_}, params=params)

    def state(self) -> dict[str, Any]:
        return self.get("/_sandbox/state").json()

    def logged(self) -> list[dict[str, Any]]:
        return self.get("/_sandbox/requests").json()["requests"]

    def add_fault(self, **spec: Any) -> requests.Response:
        response = self.post("/_sandbox/faults", json=spec)
        assert response.status_code == 200, response.text
        return response


@pytest.fixture
def api(sandbox: QualtricsSandbox) -> Api:
    return Api(sandbox.base_url)


def eq(filter_type: str, value: str, comparison: str = "eq") -> dict[str, str]:
    return {"filterType": filter_type, "comparison": comparison, "value": value}


def found(response: requests.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    return response.json()["result"]["elements"]


def assert_error(response: requests.Response, status: int, message_part: str = "") -> dict[str, Any]:
    assert response.status_code == status, response.text
    meta = response.json()["meta"]
    assert meta["httpStatus"].startswith(f"{status} - ")
    assert re.fullmatch(r"[0-9a-f-]{36}", meta["requestId"])
    assert meta["error"]["errorCode"]
    assert message_part in meta["error"]["errorMessage"]
    return meta["error"]


# ---- envelope, auth, generic request checks ------------------------------------------------


def test_whoami_returns_the_user_in_the_envelope(api: Api) -> None:
    response = api.get("/API/v3/whoami")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["meta"]["httpStatus"] == "200 - OK"
    assert re.fullmatch(r"[0-9a-f-]{36}", body["meta"]["requestId"])
    assert set(body["result"]) == set(WHOAMI_FIELDS)
    assert body["result"]["datacenter"] == "sandbox"


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/API/v3/whoami"), ("POST", CONTACTS), ("POST", f"{WORKFLOW}?urlTokenId=abc")],
)
@pytest.mark.parametrize(("token", "code"), [(None, "ATP_2"), ("wrong-token", "DCD_7")])
def test_missing_or_wrong_token_is_401(
    sandbox: QualtricsSandbox, method: str, path: str, token: str | None, code: str
) -> None:
    api = Api(sandbox.base_url, token=token)
    response = api.session.request(method, sandbox.base_url + path, json={"extRef": "x"}, timeout=10)
    assert assert_error(response, 401)["errorCode"] == code
    assert api.state()["directories"][POOL]["contacts"] == []
    assert api.state()["workflowRuns"] == []


def test_unknown_routes_are_404_envelopes(api: Api) -> None:
    for path in ("/API/v3/surveys", "/API/v3/directories/POOL_SANDBOX/mailinglists", "/favicon.ico"):
        assert_error(api.get(path), 404, "does not exist")
    assert_error(api.session.put(api.base_url + f"{CONTACTS}/CID_x", json={}, timeout=10), 404)


def test_a_body_needs_json_content_type(api: Api) -> None:
    response = api.post(CONTACTS, data='{"extRef": "a"}', headers={"Content-Type": "text/plain"})
    assert_error(response, 415, "application/json")
    json_utf8 = {"Content-Type": "application/json; charset=utf-8"}
    response = api.post(CONTACTS, data='{"extRef": "a"}', headers=json_utf8)
    assert response.status_code == 200


@pytest.mark.parametrize("raw", ["not json", "[1, 2]", '"text"', "", '{"a": NaN}'])
def test_a_body_that_is_not_a_json_object_is_400(api: Api, raw: str) -> None:
    response = api.post(CONTACTS, data=raw, headers={"Content-Type": "application/json"})
    assert assert_error(response, 400)["errorCode"].startswith("QVAL")


# ---- directories ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/API/v3/directories", "/API/v3/directories/"])
def test_list_directories_shows_the_seeded_directory(api: Api, path: str) -> None:
    api.create_contact(extRef="u1")
    result = api.get(path).json()["result"]
    assert result["nextPage"] is None
    assert result["elements"] == [
        {
            "directoryId": POOL,
            "name": "Sandbox directory",
            "contactCount": 1,
            "isDefault": True,
            "deduplicationCriteria": SEEDED_CRITERIA,
        }
    ]


# ---- contacts ------------------------------------------------------------------------------


def test_create_then_get_contact_in_the_get_shape(api: Api) -> None:
    embedded = {"plan": "pro", "seats": 3, "ratio": 2.5, "vip": True}
    contact_id = api.create_contact(
        firstName="Ada",
        lastName="Lovelace",
        email="Ada@Example.com",
        phone="+15550100",
        extRef="user-1",
        language="EN",
        unsubscribed=False,
        embeddedData=embedded,
    )
    assert re.fullmatch(r"CID_\w+", contact_id)
    response = api.get(f"{CONTACTS}/{contact_id}")
    assert response.status_code == 200
    contact = response.json()["result"]
    assert contact["contactId"] == contact_id
    assert contact["firstName"] == "Ada" and contact["lastName"] == "Lovelace"
    assert contact["email"] == "Ada@Example.com" and contact["phone"] == "+15550100"
    assert contact["extRef"] == "user-1" and contact["language"] == "EN"
    assert contact["emailDomain"] == "example.com"
    # embedded data is stored as strings, rendered the JSON way
    assert contact["embeddedData"] == {"plan": "pro", "seats": "3", "ratio": "2.5", "vip": "true"}
    assert contact["directoryUnsubscribed"] is False
    assert isinstance(contact["creationDate"], int) and contact["creationDate"] > 1_600_000_000_000
    assert contact["lastModified"] >= contact["creationDate"]
    assert "phoneNumber" not in contact and "externalDataReference" not in contact


def test_path_parts_are_url_decoded(api: Api) -> None:
    contact_id = api.create_contact(directory="POOL%5FSANDBOX", extRef="u1")
    assert api.get(f"/API/v3/directories/POOL%5FSANDBOX/contacts/{contact_id}").status_code == 200


def test_unknown_directory_or_contact_is_404(api: Api) -> None:
    assert_error(api.post("/API/v3/directories/POOL_NOPE/contacts", json={"extRef": "a"}), 404, "POOL_NOPE")
    assert_error(api.get(f"{CONTACTS}/CID_NOPE"), 404, "CID_NOPE")
    assert_error(api.get("/API/v3/directories/POOL_NOPE/contacts/CID_NOPE"), 404)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": None}, "email"),
        ({"firstName": 12}, "firstName"),
        ({"phone": 15550100}, "phone"),
        ({"unsubscribed": "true"}, "unsubscribed"),
        ({"embeddedData": "plan=pro"}, "embeddedData"),
        ({"embeddedData": {"address": {"city": "Paris"}}}, "embeddedData.address"),
        ({"embeddedData": {"tags": ["a"]}}, "embeddedData.tags"),
        ({"embeddedData": {"gone": None}}, "embeddedData.gone"),
        ({"userId": "u1"}, "userId"),
    ],
)
def test_invalid_contact_fields_are_400_naming_the_field(api: Api, body: dict[str, Any], field: str) -> None:
    assert_error(api.post(CONTACTS, json=body), 400, f"'{field}'")
    assert api.state()["directories"][POOL]["contacts"] == []


def test_dedup_on_ext_ref_updates_the_existing_contact(api: Api) -> None:
    first = api.create_contact(extRef="user-1", firstName="Ada", embeddedData={"plan": "free", "a": "1"})
    second = api.create_contact(extRef="  USER-1 ", lastName="Lovelace", embeddedData={"plan": "pro"})
    assert second == first
    contacts = api.state()["directories"][POOL]["contacts"]
    assert len(contacts) == 1
    contact = contacts[0]
    assert (contact["firstName"], contact["lastName"], contact["extRef"]) == ("Ada", "Lovelace", "  USER-1 ")
    assert contact["embeddedData"] == {"plan": "pro", "a": "1"}  # merged, not replaced


def test_dedup_needs_a_value_for_every_enabled_criterion(api: Api) -> None:
    api.create_contact(email="a@example.com")
    api.create_contact(email="a@example.com")  # no extRef: nothing to dedup on
    api.create_contact(extRef="u1")
    api.create_contact(extRef="u2")
    assert len(api.state()["directories"][POOL]["contacts"]) == 4


def test_dedup_with_several_criteria_requires_all_to_match(api: Api) -> None:
    criteria = {"email": True, "externalDataReference": True}
    api.post("/_sandbox/directories", json={"directoryId": "POOL_TWO", "deduplicationCriteria": criteria})
    first = api.create_contact("POOL_TWO", extRef="u1", email="a@example.com")
    assert api.create_contact("POOL_TWO", extRef="u1", email="A@EXAMPLE.COM") == first
    assert api.create_contact("POOL_TWO", extRef="u1", email="b@example.com") != first
    assert api.create_contact("POOL_TWO", extRef="u1") != first


def test_a_directory_without_dedup_always_creates(api: Api) -> None:
    api.post("/_sandbox/directories", json={"directoryId": "POOL_NODEDUP", "name": "No dedup"})
    ids = {api.create_contact("POOL_NODEDUP", extRef="u1", email="a@example.com") for _ in range(3)}
    assert len(ids) == 3


def test_concurrent_creates_with_one_ext_ref_make_one_contact(api: Api) -> None:
    ids: list[str] = []

    def create() -> None:
        ids.append(Api(api.base_url).create_contact(extRef="same-user"))

    threads = [threading.Thread(target=create) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(ids)) == 1
    assert len(api.state()["directories"][POOL]["contacts"]) == 1


def test_delete_contact_removes_it_and_its_transactions_then_404(api: Api) -> None:
    gone = api.create_contact(extRef="u1", email="ada@example.com")
    kept = api.create_contact(extRef="u2")
    created = api.post(TRANSACTIONS, json={"t1": {"contactId": gone, "mailingListId": LIST},
                                           "t2": {"contactId": kept, "mailingListId": LIST}})
    assert len(created.json()["result"]["createdTransactions"]) == 2
    answer = api.delete(f"{CONTACTS}/{gone}")
    assert answer.status_code == 200 and set(answer.json()) == {"meta"}
    state = api.state()["directories"][POOL]
    assert [c["contactId"] for c in state["contacts"]] == [kept]
    assert [t["contactId"] for t in state["transactions"]] == [kept]
    assert found(api.search(eq("extRef", "u1"))) == []
    assert_error(api.get(f"{CONTACTS}/{gone}"), 404, gone)
    assert_error(api.delete(f"{CONTACTS}/{gone}"), 404, gone)          # again: already deleted
    assert_error(api.delete("/API/v3/directories/POOL_NOPE/contacts/" + kept), 404, "POOL_NOPE")
    assert [r["status"] for r in api.logged() if r["method"] == "DELETE"] == [200, 404, 404]


def test_a_deleted_contact_no_longer_deduplicates(api: Api) -> None:
    """The dedup index forgets it: the same extRef makes a new contact."""
    first = api.create_contact(extRef="u1")
    assert api.delete(f"{CONTACTS}/{first}").status_code == 200
    second = api.create_contact(extRef="u1")
    assert second != first
    assert [c["contactId"] for c in api.state()["directories"][POOL]["contacts"]] == [second]


def test_delete_contact_needs_the_token(sandbox: QualtricsSandbox, api: Api) -> None:
    contact_id = api.create_contact(extRef="u1")
    assert_error(Api(sandbox.base_url, token="wrong-token").delete(f"{CONTACTS}/{contact_id}"), 401)
    assert len(api.state()["directories"][POOL]["contacts"]) == 1


def test_the_client_deletes_and_reads_404_as_already_gone(sandbox: QualtricsSandbox, api: Api) -> None:
    contact_id = api.create_contact(extRef="u1")
    client = QualtricsClient.with_token(TOKEN, base_url=sandbox.base_url)
    assert client.delete_contact(POOL, contact_id) is True
    assert client.delete_contact(POOL, contact_id) is False
    assert client.delete_contact("POOL_NOPE", contact_id) is False   # the caller tells the two 404s apart


# ---- search --------------------------------------------------------------------------------


def test_search_single_criterion_is_case_insensitive_and_trimmed(api: Api) -> None:
    contact_id = api.create_contact(extRef="User-1", email="ada@example.com", phone="555", embeddedData={})
    api.create_contact(extRef="user-2")
    response = api.search(eq("extRef", "  user-1 "))
    assert response.status_code == 200
    result = response.json()["result"]
    assert "skipToken" not in result
    [element] = result["elements"]
    assert element["id"] == contact_id
    assert element["externalDataReference"] == "User-1"
    assert element["phoneNumber"] == "555"
    assert element["email"] == "ada@example.com"
    assert element["unsubscribed"] is False
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", element["creationDate"])
    assert "embeddedData" not in element and "extRef" not in element and "contactId" not in element


def test_search_include_embedded(api: Api) -> None:
    api.create_contact(extRef="u1", embeddedData={"plan": "pro"})
    [element] = found(api.search(eq("extRef", "u1"), {"includeEmbedded": "true"}))
    assert element["embeddedData"] == {"plan": "pro"}


def test_search_and_conjunction_and_neq(api: Api) -> None:
    both = api.create_contact(extRef="u1", email="a@example.com", phone="1")
    api.create_contact(extRef="u2", email="a@example.com", phone="1")
    api.create_contact(extRef="u3", phone="1")  # no email
    criteria = [eq("extRef", "u1"), eq("phone", "1"), eq("email", "A@example.com")]
    assert [e["id"] for e in found(api.search({"conjunction": "and", "filters": criteria}))] == [both]
    others = found(api.search(eq("extRef", "u1", "neq")))
    assert sorted(e["externalDataReference"] for e in others) == ["u2", "u3"]


def test_search_other_documented_filters(api: Api) -> None:
    api.create_contact(extRef="u1", email="a@example.com")
    api.create_contact(extRef="u2")
    empty_email = {"filterType": "infoFieldState", "field": "email", "comparison": "empty"}
    assert [e["externalDataReference"] for e in found(api.search(empty_email))] == ["u2"]
    created_after = {"filterType": "created", "comparison": "gte", "value": "2000-01-01"}
    assert len(found(api.search(created_after))) == 2
    modified_before = {"filterType": "lastModified", "comparison": "lt", "value": "2000-01-01 00:00:00"}
    assert found(api.search(modified_before)) == []
    not_in_list = {"filterType": "inList", "comparison": False, "mailingListId": LIST}
    assert len(found(api.search(not_in_list))) == 2


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"filter": eq("userId", "u1")},
        {"filter": eq("extRef", "u1", "contains")},
        {"filter": {"filterType": "extRef", "comparison": "eq", "value": 5}},
        {"filter": {"filterType": "extRef", "comparison": "eq"}},
        {"filter": {"conjunction": "or", "filters": [eq("extRef", "a"), eq("email", "b")]}},
        {"filter": {"conjunction": "and", "filters": [eq("extRef", "a")]}},
        {"filter": {"conjunction": "and", "filters": [eq("extRef", str(i)) for i in range(6)]}},
        {"filter": {"filterType": "created", "comparison": "gt", "value": "2021-02-01T00:00:00Z"}},
        {"filter": eq("extRef", "a"), "extra": 1},
    ],
)
def test_invalid_search_filters_are_400(api: Api, body: dict[str, Any]) -> None:
    assert_error(api.post(SEARCH, json=body), 400)


def test_search_paginates_with_skip_token(api: Api) -> None:
    created = [api.create_contact(extRef=f"u{i}", language="EN") for i in range(5)]
    seen: list[str] = []
    params = {"pageSize": "2"}
    pages = 0
    while True:
        result = api.search(eq("language", "en"), params).json()["result"]
        pages += 1
        seen += [e["id"] for e in result["elements"]]
        if "skipToken" not in result:
            break
        params = {"pageSize": "2", "skipToken": result["skipToken"]}
    assert seen == created
    assert pages == 3


def test_search_without_page_size_returns_up_to_100(api: Api) -> None:
    api.post("/_sandbox/directories", json={"directoryId": POOL, "mailingLists": [LIST]})  # dedup off
    for _ in range(101):
        api.create_contact(language="EN")
    result = api.search(eq("language", "EN")).json()["result"]
    assert len(result["elements"]) == 100
    assert base64.b64decode(result["skipToken"]) == b"100"


@pytest.mark.parametrize(
    "params",
    [
        {"pageSize": "0"},
        {"pageSize": "101"},
        {"pageSize": "ten"},
        {"skipToken": ""},
        {"skipToken": "%%%"},
        {"skipToken": base64.b64encode(b"10000").decode()},
        {"includeEmbedded": "yes"},
    ],
)
def test_invalid_search_query_parameters_are_400(api: Api, params: dict[str, str]) -> None:
    assert_error(api.search(eq("extRef", "u1"), params), 400)


# ---- transactions --------------------------------------------------------------------------


def test_transactions_are_processed_one_by_one(api: Api) -> None:
    contact_id = api.create_contact(extRef="u1")
    good = {
        "contactId": contact_id,
        "mailingListId": LIST,
        "transactionDate": "2021-02-01 13:05:09",
        "data": {"amount": 12.5, "sku": "A1", "gift": False},
    }
    body = {
        "good": good,
        "no-date": {"contactId": contact_id, "mailingListId": LIST},
        "unknown-contact": {**good, "contactId": "CID_NOPE"},
        "unknown-list": {**good, "mailingListId": "CG_NOPE"},
        "iso-date": {**good, "transactionDate": "2021-02-01T13:05:09Z"},
        "nested-data": {**good, "data": {"items": [1, 2]}},
        "missing-contact": {"mailingListId": LIST},
        "not-an-object": "hello",
    }
    response = api.post(TRANSACTIONS, json=body)
    assert response.status_code == 200
    result = response.json()["result"]
    assert set(result["createdTransactions"]) == {"good", "no-date"}
    assert all(re.fullmatch(r"CTR_\w+", v["id"]) for v in result["createdTransactions"].values())
    unprocessed = result["unprocessedTransactions"]
    assert set(unprocessed) == set(body) - {"good", "no-date"}
    assert unprocessed["unknown-contact"]["error"] == "CONTACT_NOT_FOUND"
    assert unprocessed["unknown-list"]["error"] == "MAILING_LIST_NOT_FOUND"
    assert unprocessed["iso-date"]["error"] == "INVALID_TRANSACTION_DATE"
    assert "data.items" in unprocessed["nested-data"]["errorMessage"]
    assert "contactId" in unprocessed["missing-contact"]["errorMessage"]

    listed = api.get(f"{CONTACTS}/{contact_id}/transactions").json()["result"]
    assert listed["nextPage"] is None
    good_id = result["createdTransactions"]["good"]["id"]
    assert listed["elements"][0] == {"transactionId": good_id, **good}
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", listed["elements"][1]["transactionDate"])
    assert len(api.state()["directories"][POOL]["transactions"]) == 2


def _record_transactions(api: Api, contact_id: str, count: int) -> list[str]:
    body = {f"t{i}": {"contactId": contact_id, "mailingListId": LIST, "data": {"n": str(i)}} for i in range(count)}
    created = api.post(TRANSACTIONS, json=body).json()["result"]["createdTransactions"]
    return [created[f"t{i}"]["id"] for i in range(count)]


def test_a_contacts_transactions_come_in_pages_linked_by_next_page(api: Api) -> None:
    contact_id = api.create_contact(extRef="pages")
    ids = _record_transactions(api, contact_id, 205)
    first = api.get(f"{CONTACTS}/{contact_id}/transactions").json()["result"]
    assert len(first["elements"]) == 100 and first["nextPage"].startswith(api.base_url + CONTACTS)
    second = api.session.get(first["nextPage"], timeout=10).json()["result"]
    third = api.session.get(second["nextPage"], timeout=10).json()["result"]
    assert third["nextPage"] is None
    assert [t["transactionId"] for t in first["elements"] + second["elements"] + third["elements"]] == ids
    small = api.get(f"{CONTACTS}/{contact_id}/transactions", params={"pageSize": "7"}).json()["result"]
    assert len(small["elements"]) == 7 and "pageSize=7" in small["nextPage"]


def test_the_client_reads_every_page_of_a_contacts_transactions(api: Api) -> None:
    contact_id = api.create_contact(extRef="client-pages")
    ids = _record_transactions(api, contact_id, 250)
    credentials = QualtricsCredentials(TOKEN, "iad1")
    client = QualtricsClient(lambda force: credentials, api.base_url)
    listed = client.list_contact_transactions(POOL, contact_id)
    assert [t["transactionId"] for t in listed] == ids
    lists = [r for r in api.logged() if r["path"].endswith(f"/contacts/{contact_id}/transactions")]
    assert len(lists) == 3


def test_the_client_stops_rather_than_guess_when_the_pages_do_not_end(api: Api, monkeypatch) -> None:
    contact_id = api.create_contact(extRef="endless")
    _record_transactions(api, contact_id, 201)
    monkeypatch.setattr(qualtrics, "MAX_TRANSACTION_PAGES", 2)
    credentials = QualtricsCredentials(TOKEN, "iad1")
    with pytest.raises(PermanentError) as stopped:
        QualtricsClient(lambda force: credentials, api.base_url).list_contact_transactions(POOL, contact_id)
    assert stopped.value.code == "too_many_transactions" and contact_id in stopped.value.message


def test_the_client_sends_no_token_to_a_next_page_outside_qualtrics(api: Api) -> None:
    contact_id = api.create_contact(extRef="foreign")
    _record_transactions(api, contact_id, 101)
    credentials = QualtricsCredentials(TOKEN, "iad1")
    # The sandbox builds nextPage from the Host header: a session that sends another one gets a nextPage
    # on a host that is neither Qualtrics nor the configured origin.
    session = requests.Session()
    session.headers["Host"] = "collector.example"
    client = QualtricsClient(lambda force: credentials, api.base_url, session=session)
    with pytest.raises(PermanentError) as refused:
        client.list_contact_transactions(POOL, contact_id)
    assert refused.value.code == "qualtrics_bad_response" and "outside Qualtrics" in refused.value.message
    assert len([r for r in api.logged() if r["path"].endswith("/transactions") and r["method"] == "GET"]) == 1


def test_all_invalid_transactions_still_answer_200(api: Api) -> None:
    response = api.post(TRANSACTIONS, json={"k": {"contactId": "CID_NOPE", "mailingListId": LIST}})
    assert response.status_code == 200
    assert response.json()["result"]["createdTransactions"] == {}


@pytest.mark.parametrize(
    "date",
    [
        "2021-02-01T00:00:00",
        "2021-02-30 00:00:00",
        "2021-2-1 00:00:00",
        "2021-02-01 24:00:00",
        "2021-02-01 01:00:00 PM",
        "2021-02-01",
        1612137600000,
        None,
    ],
)
def test_transaction_date_must_be_24_hour_yyyy_mm_dd_hh_mm_ss(api: Api, date: Any) -> None:
    contact_id = api.create_contact(extRef="u1")
    entry = {"contactId": contact_id, "mailingListId": LIST, "transactionDate": date}
    result = api.post(TRANSACTIONS, json={"k": entry}).json()["result"]
    assert result["unprocessedTransactions"]["k"]["error"] == "INVALID_TRANSACTION_DATE"


@pytest.mark.parametrize("body", [{}, []])
def test_empty_or_non_object_transaction_body_is_400(api: Api, body: Any) -> None:
    assert_error(api.post(TRANSACTIONS, json=body), 400)


def test_transactions_for_unknown_contact_is_404(api: Api) -> None:
    assert_error(api.get(f"{CONTACTS}/CID_NOPE/transactions"), 404)


# ---- workflow trigger ----------------------------------------------------------------------


@pytest.mark.parametrize("path", [WORKFLOW, "/inbound-event/v1/events/JSON/triggers"])
def test_workflow_trigger_records_the_run(api: Api, path: str) -> None:
    payload = {"event": "Order Completed", "properties": {"total": 10}}
    response = api.post(path, params={"urlTokenId": "tok-123"}, json=payload)
    assert response.status_code == 200
    assert response.json()["meta"]["httpStatus"] == "200 - OK"
    [run] = api.state()["workflowRuns"]
    assert (run["urlTokenId"], run["body"]) == ("tok-123", payload)
    assert isinstance(run["time"], float)


def test_workflow_trigger_errors(api: Api) -> None:
    assert_error(api.post(WORKFLOW, json={"a": 1}), 400, "urlTokenId")
    assert_error(api.post(WORKFLOW, params={"urlTokenId": "t"}, json=[1]), 400)
    assert_error(api.post(WORKFLOW, params={"urlTokenId": "t"}), 400)  # no body at all
    assert_error(api.post(WORKFLOW, params={"urlTokenId": "t"}, json={"blob": "x" * 102_400}), 413)
    assert api.post(WORKFLOW, params={"urlTokenId": "t"}, json={"blob": "x" * 100_000}).status_code == 200
    assert len(api.state()["workflowRuns"]) == 1


# ---- faults --------------------------------------------------------------------------------


def test_before_fault_answers_without_applying(api: Api) -> None:
    api.add_fault(method="POST", pathPattern=r"/contacts$", status=429, retryAfter=1)
    response = api.post(CONTACTS, json={"extRef": "u1"})
    assert assert_error(response, 429)["errorCode"]
    assert response.headers["Retry-After"] == "1"
    assert api.state()["directories"][POOL]["contacts"] == []
    assert api.post(CONTACTS, json={"extRef": "u1"}).status_code == 200  # times=1 is used up
    assert [r["status"] for r in api.logged()] == [429, 200]


def test_after_fault_applies_then_fails(api: Api) -> None:
    contact_id = api.create_contact(extRef="u1")
    api.add_fault(pathPattern="/transactions", status=504, when="after")
    response = api.post(TRANSACTIONS, json={"k": {"contactId": contact_id, "mailingListId": LIST}})
    assert_error(response, 504)
    assert len(api.state()["directories"][POOL]["transactions"]) == 1  # accepted despite the 504


def test_fault_filters_on_method_and_counts_times(api: Api) -> None:
    api.add_fault(method="GET", pathPattern="whoami", status=503, times=2)
    assert api.post("/API/v3/whoami", json={}).status_code == 404  # method does not match
    assert api.get("/API/v3/whoami").json()["meta"]["httpStatus"] == "503 - Temporary Internal Server Error"
    assert api.get("/API/v3/whoami").status_code == 503
    assert api.get("/API/v3/whoami").status_code == 200


def test_fault_with_custom_body(api: Api) -> None:
    api.add_fault(pathPattern="whoami", status=200, body={"meta": {"httpStatus": "200 - OK"}})
    assert api.get("/API/v3/whoami").json() == {"meta": {"httpStatus": "200 - OK"}}


def test_slow_success_provokes_client_timeout_but_applies(api: Api) -> None:
    api.add_fault(pathPattern="/contacts$", status=0, delaySeconds=1.0)
    with pytest.raises(requests.exceptions.ReadTimeout):
        api.post(CONTACTS, json={"extRef": "u1"}, timeout=0.2)
    assert len(api.state()["directories"][POOL]["contacts"]) == 1
    assert api.logged()[0]["status"] == 200


def test_delete_faults_clears_them(api: Api) -> None:
    api.add_fault(pathPattern=".", status=500, times=5)
    assert len(api.get("/_sandbox/faults").json()["faults"]) == 1
    assert api.delete("/_sandbox/faults").status_code == 200
    assert api.get("/API/v3/whoami").status_code == 200


@pytest.mark.parametrize(
    "spec",
    [
        {"status": 429},
        {"pathPattern": "(", "status": 429},
        {"pathPattern": ".", "status": 1000},
        {"pathPattern": ".", "status": 429, "times": 0},
        {"pathPattern": ".", "status": 429, "when": "during"},
        {"pathPattern": ".", "status": 429, "retryAfter": -1},
        {"pathPattern": ".", "status": 429, "path": "/x"},
    ],
)
def test_invalid_fault_specs_are_rejected(api: Api, spec: dict[str, Any]) -> None:
    response = api.post("/_sandbox/faults", json=spec)
    assert response.status_code == 400
    assert response.json()["error"]


# ---- request log, reset, admin directories -------------------------------------------------


def test_request_log_records_api_calls_in_order_with_token_masked(api: Api) -> None:
    api.get("/API/v3/whoami")
    api.search(eq("extRef", "u1"), {"pageSize": "5"})
    Api(api.base_url, token="bad").get("/API/v3/directories")
    api.get("/_sandbox/state")  # admin calls are not logged
    log = api.logged()
    assert [(r["method"], r["path"], r["status"]) for r in log] == [
        ("GET", "/API/v3/whoami", 200),
        ("POST", SEARCH, 200),
        ("GET", "/API/v3/directories", 401),
    ]
    assert log[1]["query"] == {"pageSize": "5"}
    assert log[1]["body"] == {"filter": eq("extRef", "u1")}
    assert log[0]["body"] is None
    assert all(r["headers"]["X-API-TOKEN"] == "***" for r in log)
    assert TOKEN not in str(log)


def test_reset_restores_the_seeded_state(sandbox: QualtricsSandbox, api: Api) -> None:
    api.create_contact(extRef="u1")
    api.post("/_sandbox/directories", json={"directoryId": "POOL_OTHER"})
    api.post(WORKFLOW, params={"urlTokenId": "t"}, json={})
    api.add_fault(pathPattern="never-matches", status=500)
    assert api.post("/_sandbox/reset").status_code == 200
    state = api.state()
    assert list(state["directories"]) == [POOL]
    assert state["directories"][POOL] == {
        "name": "Sandbox directory",
        "deduplicationCriteria": SEEDED_CRITERIA,
        "mailingLists": [LIST],
        "contacts": [],
        "transactions": [],
    }
    assert state["workflowRuns"] == []
    assert api.logged() == []
    assert api.get("/_sandbox/faults").json()["faults"] == []
    api.create_contact(extRef="u1")
    sandbox.reset()  # the Python API does the same
    assert api.state()["directories"][POOL]["contacts"] == []


def test_admin_directories_create_and_replace(api: Api) -> None:
    criteria = {"email": True}
    spec = {"directoryId": "POOL_B", "name": "B", "mailingLists": ["CG_B"], "deduplicationCriteria": criteria}
    response = api.post("/_sandbox/directories", json=spec)
    assert response.status_code == 200
    contact_id = api.create_contact("POOL_B", email="x@example.com")
    tx = {"k": {"contactId": contact_id, "mailingListId": "CG_B"}}
    created = api.post("/API/v3/directories/POOL_B/transactions", json=tx).json()["result"]
    assert list(created["createdTransactions"]) == ["k"]
    directories = {d["directoryId"]: d for d in found(api.get("/API/v3/directories"))}
    assert directories["POOL_B"]["isDefault"] is False
    assert directories["POOL_B"]["deduplicationCriteria"]["email"] is True
    api.post("/_sandbox/directories", json={"directoryId": "POOL_B"})  # replace: empty again
    assert api.state()["directories"]["POOL_B"]["contacts"] == []
    assert api.post("/_sandbox/directories", json={"name": "no id"}).status_code == 400
    bad_criteria = {"directoryId": "POOL_C", "deduplicationCriteria": {"extRef": True}}
    assert api.post("/_sandbox/directories", json=bad_criteria).status_code == 400


# ---- Python API and CLI --------------------------------------------------------------------


def test_base_url_needs_start() -> None:
    sandbox = QualtricsSandbox(TOKEN)
    with pytest.raises(RuntimeError):
        _ = sandbox.base_url
    with sandbox:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", sandbox.base_url)
        assert requests.get(sandbox.base_url + "/_sandbox/state", timeout=5).status_code == 200


def test_cli_serves_and_prints_its_url() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "local.sandbox.qualtrics_sandbox", "--port", "0", "--token", "cli-token", "--quiet"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert url, line
        headers = {"X-API-TOKEN": "cli-token"}
        response = requests.get(url.group() + "/API/v3/whoami", headers=headers, timeout=5)
        assert response.status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=10)
