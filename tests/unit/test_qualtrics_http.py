"""QualtricsClient at the HTTP level, with ``responses``: answers the sandbox cannot easily give.

A 401 and the refetched token, Retry-After, how each status is classified, paging through ``nextPage``,
timeouts and refused connections, 2xx bodies that are not a JSON object, and the ``on_call`` hook.
(The URL rule, redirects and the datacenter are tested against the sandbox in test_qualtrics.py.)
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from typing import Any

import pytest
import requests
import responses
from segment_qualtrics.adapters.qualtrics import MAX_TRANSACTION_PAGES, QualtricsClient, QualtricsCredentials
from segment_qualtrics.destination.errors import DestinationError, PermanentError, RetryableError

BASE = "https://iad1.qualtrics.com"
WHOAMI = BASE + "/API/v3/whoami"
TRANSACTIONS = BASE + "/API/v3/directories/POOL_1/contacts/CID_1/transactions"
OK = {"result": {"userId": "UR_1"}, "meta": {"httpStatus": "200 - OK", "requestId": "req-ok"}}


class Tokens:
    """The credentials provider: a new token each time it is forced, as after a rotation."""

    def __init__(self) -> None:
        self.forced: list[bool] = []

    def __call__(self, force: bool) -> QualtricsCredentials:
        self.forced.append(force)
        return QualtricsCredentials(f"token-{sum(self.forced)}", "iad1")


@pytest.fixture
def http():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def tokens() -> Tokens:
    return Tokens()


@pytest.fixture
def calls() -> list[tuple[str, int | None]]:
    return []


@pytest.fixture
def client(tokens: Tokens, calls: list) -> QualtricsClient:
    return QualtricsClient(tokens, on_call=lambda operation, status, seconds: calls.append((operation, status)))


def sent_tokens(http: responses.RequestsMock) -> list[str]:
    return [call.request.headers["X-API-TOKEN"] for call in http.calls]


def error_body(message: str = "nope", request_id: str = "req-1") -> dict[str, Any]:
    return {"meta": {"httpStatus": "x", "requestId": request_id,
                     "error": {"errorMessage": message, "errorCode": "QE_1"}}}


# --- 401: the token is fetched once more ------------------------------------------------------------

def test_a_401_fetches_the_token_again_and_retries_once(http, tokens, client, calls) -> None:
    http.get(WHOAMI, status=401, json=error_body("expired"))
    http.get(WHOAMI, status=200, json=OK)
    assert client.whoami() == OK
    assert tokens.forced == [False, True]
    assert sent_tokens(http) == ["token-0", "token-1"]
    assert calls == [("whoami", 401), ("whoami", 200)]


def test_a_second_401_is_a_permanent_unauthorized_error(http, tokens, client, calls) -> None:
    http.get(WHOAMI, status=401, json=error_body("bad token", "req-401"))
    with pytest.raises(PermanentError) as refused:
        client.whoami()
    assert (refused.value.code, refused.value.status, refused.value.request_id) == \
        ("qualtrics_unauthorized", 401, "req-401")
    assert "bad token" in refused.value.message
    assert tokens.forced == [False, True]   # once more, not again and again
    assert len(http.calls) == 2 and calls == [("whoami", 401), ("whoami", 401)]


def test_the_retry_after_a_401_reports_its_own_error(http, tokens, client) -> None:
    http.post(BASE + "/API/v3/directories/POOL_1/contacts", status=401)
    http.post(BASE + "/API/v3/directories/POOL_1/contacts", status=503)
    with pytest.raises(RetryableError) as failed:
        client.create_contact("POOL_1", {"extRef": "u1"})
    assert (failed.value.code, failed.value.status) == ("qualtrics_server_error", 503)
    assert len(http.calls) == 2
    assert [json.loads(call.request.body) for call in http.calls] == [{"extRef": "u1"}] * 2   # the same call again


@pytest.mark.parametrize("status", [403, 429, 500])
def test_other_errors_do_not_fetch_the_token_again(http, tokens, client, status: int) -> None:
    http.get(WHOAMI, status=status)
    with pytest.raises(DestinationError) as failed:
        client.whoami()
    assert failed.value.status == status
    assert tokens.forced == [False] and len(http.calls) == 1


# --- statuses and Retry-After -----------------------------------------------------------------------

@pytest.mark.parametrize(("status", "kind", "code"), [
    (500, RetryableError, "qualtrics_server_error"),
    (502, RetryableError, "qualtrics_server_error"),
    (503, RetryableError, "qualtrics_server_error"),
    (504, RetryableError, "qualtrics_timeout"),
    (599, RetryableError, "qualtrics_server_error"),
    (408, RetryableError, "qualtrics_timeout"),
    (423, RetryableError, "qualtrics_rejected"),
    (429, RetryableError, "qualtrics_rate_limited"),
    (501, PermanentError, "qualtrics_server_error"),
    (400, PermanentError, "qualtrics_rejected"),
    (403, PermanentError, "qualtrics_rejected"),
    (404, PermanentError, "qualtrics_rejected"),
    (409, PermanentError, "qualtrics_rejected"),
    (413, PermanentError, "qualtrics_rejected"),
    (422, PermanentError, "qualtrics_rejected"),
])
def test_each_status_is_classified_with_the_qualtrics_request_id(http, client, status, kind, code) -> None:
    http.post(BASE + "/API/v3/directories/POOL_1/contacts/search", status=status, json=error_body("why", "req-9"))
    with pytest.raises(DestinationError) as failed:
        client.search_contacts("POOL_1", {"email": "a@example.com"})
    assert type(failed.value) is kind
    assert (failed.value.code, failed.value.status, failed.value.request_id) == (code, status, "req-9")
    assert "why" in failed.value.message and "QE_1" in failed.value.message


@pytest.mark.parametrize("body", [b"", b"<html>Bad Gateway</html>", b"[1, 2]", b'{"meta": "x"}', b"\xff\xfe"])
def test_an_error_body_of_any_shape_still_classifies(http, client, body: bytes) -> None:
    http.get(WHOAMI, status=502, body=body)
    with pytest.raises(RetryableError) as failed:
        client.whoami()
    assert (failed.value.code, failed.value.status, failed.value.request_id) == ("qualtrics_server_error", 502, None)


@pytest.mark.parametrize(("header", "value", "expected"), [
    ("Retry-After", "7", 7.0),
    ("retry-after", "120", 120.0),
    ("RETRY-AFTER", "2.5", 2.5),
    ("Retry-After", "-3", 0.0),
    ("Retry-After", "soon", None),
])
def test_retry_after_in_seconds_reaches_the_error(http, client, header: str, value: str, expected) -> None:
    http.get(WHOAMI, status=429, headers={header: value})
    with pytest.raises(RetryableError) as limited:
        client.whoami()
    assert limited.value.code == "qualtrics_rate_limited" and limited.value.retry_after == expected


@pytest.mark.parametrize(("retry_after", "expected"), [
    ("Mon, 07 Dec 2026 21:05:00 GMT", 300.0),
    ("Mon, 07 Dec 2026 21:00:01 GMT", 1.0),
    ("Monday, 07-Dec-26 21:10:00 GMT", 600.0),       # the obsolete RFC 850 form a recipient must accept
    ("Mon Dec  7 21:01:00 2026", 60.0),               # and asctime's
    ("Mon, 07 Dec 2026 20:00:00 GMT", 0.0),           # already past: no wait
    ("Mon, 07 Dec 2026 25:99:00 GMT", None),          # not a date
    ("Mon, 07 Dec 2026 21:05:00 GMT" + " " * 5000 + "x", None),
])
def test_retry_after_as_an_http_date_counts_from_the_answers_date(http, client, retry_after: str, expected) -> None:
    """Qualtrics' own clock (its Date header) is the one the date was set by: no skew with the worker's."""
    http.get(WHOAMI, status=429, headers={"Retry-After": retry_after, "Date": "Mon, 07 Dec 2026 21:00:00 GMT"})
    with pytest.raises(RetryableError) as limited:
        client.whoami()
    assert limited.value.retry_after == expected


def test_retry_after_as_an_http_date_without_a_date_header_counts_from_now(http, client) -> None:
    in_an_hour = email.utils.formatdate(time.time() + 3600, usegmt=True)
    http.get(WHOAMI, status=429, headers={"Retry-After": in_an_hour})
    with pytest.raises(RetryableError) as limited:
        client.whoami()
    assert 3000 < limited.value.retry_after <= 3600


def test_retry_after_on_a_503_reaches_the_error_too(http, client) -> None:
    http.get(WHOAMI, status=503, headers={"Retry-After": "30"})
    with pytest.raises(RetryableError) as unavailable:
        client.whoami()
    assert unavailable.value.retry_after == 30.0


# --- timeouts and connections -----------------------------------------------------------------------

@pytest.mark.parametrize(("failure", "code"), [
    (requests.exceptions.ConnectTimeout("connect timed out"), "qualtrics_timeout"),
    (requests.exceptions.ReadTimeout("read timed out"), "qualtrics_timeout"),
    (requests.exceptions.ConnectionError("connection refused"), "network_error"),
    (requests.exceptions.ChunkedEncodingError("connection broken"), "network_error"),
    (requests.exceptions.SSLError("certificate verify failed"), "network_error"),
])
def test_timeouts_and_connection_failures_are_retryable(http, tokens, client, calls, failure, code) -> None:
    http.get(WHOAMI, body=failure)
    with pytest.raises(RetryableError) as failed:
        client.whoami()
    assert failed.value.code == code and failed.value.status is None
    assert str(failure) in failed.value.message
    assert calls == [("whoami", None)]   # the hook hears of a call that got no status
    assert tokens.forced == [False]


def test_the_timeout_asked_for_is_the_one_sent(http, client) -> None:
    http.get(WHOAMI, json=OK)
    client.whoami(timeout=(1.5, 2.5))
    http.get(WHOAMI, json=OK)
    client.whoami()
    assert [call.request.req_kwargs["timeout"] for call in http.calls] == [(1.5, 2.5), (3.05, 10.0)]


# --- 2xx bodies --------------------------------------------------------------------------------------

NOT_AN_OBJECT = [b"", b"not json", b"<html></html>", b"[1, 2]", b'"text"', b"null", b"42", b"\xff\xfe\x00"]


@pytest.mark.parametrize("body", NOT_AN_OBJECT)
def test_a_2xx_body_that_is_not_a_json_object_reads_as_empty(http, client, body: bytes) -> None:
    http.get(WHOAMI, status=200, body=body)
    assert client.whoami() == {}


@pytest.mark.parametrize("body", [*NOT_AN_OBJECT, b"{}", b'{"result": "x"}', b'{"result": null}', b'{"result": {}}',
                                  b'{"result": {"elements": "CTR_1"}}', b'{"result": {"elements": {"a": {}}}}',
                                  b'{"result": {"elements": [1, "x"]}}'])
def test_a_list_answer_without_a_list_of_elements_proves_nothing(http, client, body: bytes) -> None:
    """Read as "no contact" or "no transaction", such an answer would create a duplicate: it is an error."""
    http.post(BASE + "/API/v3/directories/POOL_1/contacts/search", status=200, body=body)
    with pytest.raises(RetryableError) as bad:
        client.search_contacts("POOL_1", {"extRef": "u1"})
    assert bad.value.code == "qualtrics_bad_response" and "search_contacts" in bad.value.message
    http.get(TRANSACTIONS, status=200, json=page([], "/API/v3/p2"))
    http.get(BASE + "/API/v3/p2", status=200, body=body)   # on a later page as well as the first
    with pytest.raises(RetryableError) as bad:
        client.list_contact_transactions("POOL_1", "CID_1")
    assert bad.value.code == "qualtrics_bad_response"


def test_an_empty_list_of_elements_is_an_answer(http, client) -> None:
    http.post(BASE + "/API/v3/directories/POOL_1/contacts/search", json={"result": {"elements": []}})
    assert client.search_contacts("POOL_1", {"extRef": "u1"}) == []
    http.get(TRANSACTIONS, json={"result": {"elements": []}})
    assert client.list_contact_transactions("POOL_1", "CID_1") == []


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"result": {}}', b'{"result": {"id": ""}}'])
def test_a_created_contact_without_an_id_is_a_retryable_bad_response(http, client, body: bytes) -> None:
    http.post(BASE + "/API/v3/directories/POOL_1/contacts", status=200, body=body)
    with pytest.raises(RetryableError) as bad:
        client.create_contact("POOL_1", {"extRef": "u1"})
    assert bad.value.code == "qualtrics_bad_response"


def test_a_transactions_answer_reads_created_and_unprocessed(http, client) -> None:
    http.post(BASE + "/API/v3/directories/POOL_1/transactions", status=200, json={
        "result": {"createdTransactions": {"seg1": {"id": "CTR_1"}},
                   "unprocessedTransactions": {"seg2": {"error": "bad", "errorMessage": "no contact"}}},
        "meta": {"requestId": "req-t"}})
    result = client.create_transactions("POOL_1", {"seg1": {}, "seg2": {}})
    assert result.created == {"seg1": "CTR_1"}
    assert result.unprocessed == {"seg2": {"error": "bad", "errorMessage": "no contact"}}
    assert result.request_id == "req-t"


# --- paging ------------------------------------------------------------------------------------------

def page(elements: list[dict[str, Any]], next_page: Any = None) -> dict[str, Any]:
    return {"result": {"elements": elements, "nextPage": next_page}, "meta": {"httpStatus": "200 - OK"}}


def test_pages_are_followed_through_absolute_and_relative_next_pages(http, client, calls) -> None:
    http.get(TRANSACTIONS, json=page([{"id": "CTR_1"}], TRANSACTIONS + "?skipToken=a"),
             match=[responses.matchers.query_string_matcher("")])
    http.get(TRANSACTIONS, json=page([{"id": "CTR_2"}], "/API/v3/directories/POOL_1/contacts/CID_1/transactions"
                                                         "?skipToken=b"),
             match=[responses.matchers.query_param_matcher({"skipToken": "a"})])
    # Another datacenter of qualtrics.com is Qualtrics too.
    http.get("https://sjc1.qualtrics.com/API/v3/next", json=page([{"id": "CTR_3"}], ""),
             match=[responses.matchers.query_param_matcher({"skipToken": "c"})])
    http.get(TRANSACTIONS, json=page([], "https://sjc1.qualtrics.com/API/v3/next?skipToken=c"),
             match=[responses.matchers.query_param_matcher({"skipToken": "b"})])
    assert [t["id"] for t in client.list_contact_transactions("POOL_1", "CID_1")] == ["CTR_1", "CTR_2", "CTR_3"]
    assert [call.request.url for call in http.calls] == [
        TRANSACTIONS, TRANSACTIONS + "?skipToken=a", TRANSACTIONS + "?skipToken=b",
        "https://sjc1.qualtrics.com/API/v3/next?skipToken=c"]
    assert sent_tokens(http) == ["token-0"] * 4
    assert calls == [("list_transactions", 200)] * 4


def test_a_401_on_a_later_page_refetches_the_token_for_that_page(http, tokens, client) -> None:
    http.get(TRANSACTIONS, json=page([{"id": "CTR_1"}], "/API/v3/p2"))
    http.get(BASE + "/API/v3/p2", status=401)
    http.get(BASE + "/API/v3/p2", json=page([{"id": "CTR_2"}]))
    assert [t["id"] for t in client.list_contact_transactions("POOL_1", "CID_1")] == ["CTR_1", "CTR_2"]
    assert sent_tokens(http) == ["token-0", "token-0", "token-1"]


def test_an_error_on_a_later_page_fails_the_whole_list(http, client) -> None:
    """Half a list cannot prove a transaction absent."""
    http.get(TRANSACTIONS, json=page([{"id": "CTR_1"}], "/API/v3/p2"))
    http.get(BASE + "/API/v3/p2", status=500)
    with pytest.raises(RetryableError) as failed:
        client.list_contact_transactions("POOL_1", "CID_1")
    assert failed.value.status == 500


def test_a_contact_of_exactly_the_page_limit_is_read_to_the_end(http, client) -> None:
    for n in range(1, MAX_TRANSACTION_PAGES):
        http.get(BASE + f"/API/v3/p{n}", json=page([{"id": f"CTR_{n + 1}"}], f"/API/v3/p{n + 1}"
                                                   if n + 1 < MAX_TRANSACTION_PAGES else None))
    http.get(TRANSACTIONS, json=page([{"id": "CTR_1"}], "/API/v3/p1"))
    listed = client.list_contact_transactions("POOL_1", "CID_1")
    assert [t["id"] for t in listed] == [f"CTR_{n}" for n in range(1, MAX_TRANSACTION_PAGES + 1)]


def test_more_pages_than_the_limit_is_too_many_transactions(http, client) -> None:
    http.get(TRANSACTIONS, json=page([{"id": "CTR_0"}], "/API/v3/more"))
    http.get(BASE + "/API/v3/more", json=page([{"id": "CTR_n"}], "/API/v3/more"))   # it never ends
    with pytest.raises(PermanentError) as endless:
        client.list_contact_transactions("POOL_1", "CID_1")
    assert endless.value.code == "too_many_transactions" and "CID_1" in endless.value.message
    assert MAX_TRANSACTION_PAGES <= len(http.calls) <= MAX_TRANSACTION_PAGES + 1   # bounded, no endless loop


@pytest.mark.parametrize("next_page", [
    "https://evil.example/API/v3/next",
    "http://iad1.qualtrics.com/API/v3/next",           # not https
    "https://iad1.qualtrics.com:8443/API/v3/next",     # not 443
    "https://qualtrics.com.evil.example/API/v3/next",
    "https://user@iad1.qualtrics.com/API/v3/next",
])
def test_a_next_page_outside_qualtrics_gets_no_token(http, client, calls, next_page: str) -> None:
    http.get(TRANSACTIONS, json=page([{"id": "CTR_1"}], next_page))
    http.get(re.compile(r".*"), status=200, json=page([]))   # whatever would have answered, had it been asked
    with pytest.raises(PermanentError) as refused:
        client.list_contact_transactions("POOL_1", "CID_1")
    assert refused.value.code == "qualtrics_bad_response" and "outside Qualtrics" in refused.value.message
    assert [call.request.url for call in http.calls] == [TRANSACTIONS]
    assert calls == [("list_transactions", 200)]


@pytest.mark.parametrize("next_page", [7, ["/API/v3/next"], {"url": "/API/v3/next"}, True])
def test_a_next_page_that_is_not_text_is_a_bad_response(http, client, next_page: Any) -> None:
    http.get(TRANSACTIONS, json=page([], next_page))
    with pytest.raises(PermanentError) as bad:
        client.list_contact_transactions("POOL_1", "CID_1")
    assert bad.value.code == "qualtrics_bad_response" and len(http.calls) == 1


# --- the on_call hook ----------------------------------------------------------------------------------

def test_on_call_hears_each_http_call_once_with_its_status_and_duration(http, tokens) -> None:
    heard: list[tuple[str, int | None, float]] = []
    client = QualtricsClient(tokens, on_call=lambda *call: heard.append(call))
    http.post(BASE + "/API/v3/directories/POOL_1/contacts", status=401)
    http.post(BASE + "/API/v3/directories/POOL_1/contacts", json={"result": {"id": "CID_9"}})
    http.post("https://iad1.qualtrics.com/inbound-event/v1/events/json/triggers", status=302,
              headers={"Location": "https://evil.example/"})
    assert client.create_contact("POOL_1", {"extRef": "u1"}) == "CID_9"
    with pytest.raises(PermanentError):
        client.trigger_workflow("https://iad1.qualtrics.com/inbound-event/v1/events/json/triggers", {"a": 1})
    with pytest.raises(PermanentError):   # refused before it leaves: no call, nothing heard
        client.trigger_workflow("https://evil.example/x", {"a": 1})
    assert [(operation, status) for operation, status, _ in heard] == \
        [("create_contact", 401), ("create_contact", 200), ("trigger_workflow", 302)]
    assert all(isinstance(seconds, float) and seconds >= 0 for _, _, seconds in heard)
    assert len(http.calls) == 3
