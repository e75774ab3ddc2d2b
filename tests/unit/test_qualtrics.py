"""The Qualtrics client (qualtrics.py): where the API token may go, and that no redirect is ever followed.

The rule (``token_url_refusal``) is pure and tested on its own, then with a property over arbitrary
URL-like strings against urllib3's and requests' own reading of the URL. The client's behaviour is
tested over HTTP against the in-process Qualtrics sandbox and a recording "foreign host"; the whole
catalogue of URL tricks, per call type and through the worker, is in
tests/integration/test_token_confinement.py.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from segment_qualtrics.adapters.qualtrics import (
    Origin,
    QualtricsClient,
    QualtricsCredentials,
    origin_of,
    token_url_refusal,
)
from segment_qualtrics.destination.errors import PermanentError
from urllib3.util import parse_url

from local.sandbox.qualtrics_sandbox import QualtricsSandbox
from tests.integration.foreign_host import ForeignHost

TOKEN = "unit-test-token"
BASE = "http://127.0.0.1:8765"
BASE_ORIGIN = origin_of(BASE)


# ------------------------------------------------------------------------------------------------ the rule

@pytest.mark.parametrize("url", [
    "https://iad1.qualtrics.com/API/v3/whoami",
    "https://qualtrics.com/",
    "https://IAD1.Qualtrics.COM/x",                      # host names are case-insensitive
    "https://iad1.qualtrics.com:443/x",                  # the default port, spelt out
    "https://acme.iad1.qualtrics.com/inbound-event/v1/events/json/triggers?urlTokenId=x",
    "https://iad1.qualtrics.com",
    "https://iad1.qualtrics.com?next=@evil.example",     # @ after the authority is query, not userinfo
    "https://iad1.qualtrics.com#@evil.example",          # ... or fragment (never sent)
    BASE + "/API/v3/whoami",                             # QUALTRICS_BASE_URL's exact origin
    BASE,
])
def test_qualtrics_and_the_base_origin_are_allowed(url: str) -> None:
    assert token_url_refusal(url, BASE_ORIGIN) is None


@pytest.mark.parametrize(("url", "reason"), [
    ("https://evil.example\\@iad1.qualtrics.com/x", "backslash"),   # the review's finding
    ("https://iad1.qualtrics.com\\@evil.example/x", "backslash"),
    ("https://iad1.qualtrics.com /x", "space"),
    (" https://iad1.qualtrics.com/x", "space"),
    ("https://iad1.qualtrics.com/x\n", "control"),
    ("https://iad1.qualtrics.com\t/x", "control"),
    ("https://iad1.qualtrics.com\x00.evil.example/", "control"),
    ("https://iad1.qualtrics.com\u200b/", "non-ASCII"),
    ("https://iad1\u3002qualtrics.com/", "non-ASCII"),                 # ideographic full stop
    ("https://iad1\uff0equaltrics.com/", "non-ASCII"),                 # fullwidth full stop
    ("https://\uff49\uff41\uff44\uff11.qualtrics.com/", "non-ASCII"),  # fullwidth letters
    ("https://iad1%2equaltrics.com/", "escapes"),                       # urllib3 would decode it
    ("https://evil.example%2f@iad1.qualtrics.com/", "escapes"),
    ("https://user@iad1.qualtrics.com/", "userinfo"),
    ("https://iad1.qualtrics.com:pw@evil.example/", "userinfo"),
    ("https://iad1.qualtrics.com./x", "not qualtrics.com"),            # trailing dot
    ("https://qualtrics.com.evil.example/", "not qualtrics.com"),
    ("https://evilqualtrics.com/", "not qualtrics.com"),
    ("https://iad1.qualtrics.co/", "not qualtrics.com"),
    ("https://iad1..qualtrics.com/", "not qualtrics.com"),             # empty label
    ("https://-iad1.qualtrics.com/", "not qualtrics.com"),
    ("https://104.16.1.1/", "not qualtrics.com"),                      # IP literals
    ("https://[::1]/", "not qualtrics.com"),
    ("https:///API/v3/whoami", "does not start"),                      # empty host
    ("https://", "does not start"),
    ("", "empty"),
    ("//iad1.qualtrics.com/x", "does not start"),                      # scheme-relative
    ("/API/v3/whoami", "does not start"),
    ("http://iad1.qualtrics.com/", "not https"),                       # plain http outside the base origin
    ("ftp://iad1.qualtrics.com/", "not https"),
    ("https://iad1.qualtrics.com:8443/", "not 443"),
    ("https://iad1.qualtrics.com:/x", "does not start"),
    ("https://iad1.qualtrics.com:99999/", "port"),
    ("http://127.0.0.1:8766/", "not https"),                           # the base host, another port
    ("http://localhost:8765/", "not https"),                           # the base port, another host name
    ("https://127.0.0.1:8765/", "not 443"),                            # the base host and port, https
    ("https://iad1.qualtrics.com/" + "x" * 9000, "longer"),
])
def test_everything_else_is_refused_with_a_reason(url: str, reason: str) -> None:
    problem = token_url_refusal(url, BASE_ORIGIN)
    assert problem is not None and reason in problem, problem


def test_without_a_base_url_only_qualtrics_is_allowed() -> None:
    assert token_url_refusal(BASE + "/x") is not None
    assert token_url_refusal("https://iad1.qualtrics.com/x") is None


def test_the_base_origin_is_read_like_any_url() -> None:
    assert origin_of("http://127.0.0.1:8765/some/path") == Origin("http", "127.0.0.1", 8765)
    assert origin_of("https://proxy.example") == Origin("https", "proxy.example", 443)
    assert origin_of("http://[::1]:8765") == Origin("http", "::1", 8765)
    assert token_url_refusal("http://[::1]:8765/x", origin_of("http://[::1]:8765")) is None
    # A base URL the rule cannot read matches no URL: every call is refused, nothing is sent.
    assert origin_of("http://user:pw@127.0.0.1:8765") is None
    assert origin_of("http://127.0.0.1:8765\\@evil.example") is None
    assert origin_of(None) is None


# Pieces URL tricks are made of: hosts, separators, dots and spaces of every kind.
PIECES = ["https://", "http://", "HTTPS://", "//", "/", "\\", "@", ":", "#", "?", "%", "%2e", "%40", "%5c", ".",
          "..", "-", "[", "]", ";", "=", "&", " ", "\t", "\n", "\r", "\x00", "\u3002", "\uff0e", "\u200b", "\u2024",
          "qualtrics.com", "qualtrics", "iad1", "iad1.", "evil.example", "evil", "127.0.0.1", "localhost",
          "8765", "443", "8766", "0", "::1", "com", "API/v3/whoami", "xn--", "\u0131", "K", "\u212a"]
URLS = st.one_of(
    st.text(max_size=60),
    st.lists(st.sampled_from(PIECES), max_size=12).map("".join),
    st.builds(lambda scheme, rest: scheme + rest, st.sampled_from(["https://", "http://"]),
              st.lists(st.sampled_from(PIECES), max_size=10).map("".join)),
)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(URLS)
@example("https://evil.example\\@iad1.qualtrics.com/x")
@example("https://iad1.qualtrics.com#@evil.example")
@example("http://127.0.0.1:8765")
@example("https://iad1%2equaltrics.com/")
def test_an_allowed_url_is_qualtrics_for_urllib3_requests_and_the_connection(url: str) -> None:
    if token_url_refusal(url, BASE_ORIGIN) is not None:
        return
    parsed = parse_url(url)
    scheme, host = (parsed.scheme or "").lower(), (parsed.host or "").lower()
    port = parsed.port or {"http": 80, "https": 443}[scheme]
    qualtrics = scheme == "https" and port == 443 and (host == "qualtrics.com" or host.endswith(".qualtrics.com"))
    assert qualtrics or Origin(scheme, host, port) == BASE_ORIGIN, url
    assert parsed.auth is None
    # requests prepares the URL with parse_url and its adapter connects to urlsplit(prepared.url)'s host.
    prepared = requests.Request("GET", url).prepare()
    assert parse_url(prepared.url).host == parsed.host
    connected = urlsplit(prepared.url)
    assert (connected.hostname, connected.port or port) == (host, port)


# ------------------------------------------------------------------------------------------------ the client

@pytest.fixture(scope="module")
def foreign():
    host = ForeignHost().start()
    yield host
    host.stop()


@pytest.fixture(scope="module")
def sandbox():
    running = QualtricsSandbox(TOKEN).start()
    yield running
    running.stop()


@pytest.fixture
def qualtrics(sandbox: QualtricsSandbox, foreign: ForeignHost) -> QualtricsClient:
    requests.post(sandbox.base_url + "/_sandbox/reset", timeout=5).raise_for_status()
    foreign.clear()
    return QualtricsClient.with_token(TOKEN, "iad1", sandbox.base_url)


def fault(sandbox: QualtricsSandbox, **spec: object) -> None:
    requests.post(sandbox.base_url + "/_sandbox/faults", json=spec, timeout=5).raise_for_status()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_a_permanent_error_and_is_not_followed(qualtrics: QualtricsClient, sandbox: QualtricsSandbox,
                                                             foreign: ForeignHost, status: int) -> None:
    fault(sandbox, pathPattern="/contacts$", method="POST", status=status,
          location=f"http://127.0.0.1:{foreign.port}/API/v3/directories/POOL_SANDBOX/contacts")
    with pytest.raises(PermanentError) as redirected:
        qualtrics.create_contact("POOL_SANDBOX", {"extRef": "u1"})
    assert redirected.value.code == "qualtrics_redirect" and redirected.value.status == status
    assert f"answered {status}" in redirected.value.message
    assert f"'127.0.0.1:{foreign.port}'" in redirected.value.message
    assert foreign.received() == []


def test_a_relative_redirect_is_refused_too(qualtrics: QualtricsClient, sandbox: QualtricsSandbox) -> None:
    fault(sandbox, pathPattern="/whoami$", status=302, location="/elsewhere")
    with pytest.raises(PermanentError) as redirected:
        qualtrics.whoami()
    assert redirected.value.code == "qualtrics_redirect" and "without a host" in redirected.value.message


def test_a_refused_url_never_leaves_the_client(qualtrics: QualtricsClient, sandbox: QualtricsSandbox,
                                               foreign: ForeignHost) -> None:
    trick = f"http://127.0.0.1:{foreign.port}\\@{sandbox.base_url.split('://')[1]}/inbound-event/v1/events/json"
    with pytest.raises(PermanentError) as refused:
        qualtrics.trigger_workflow(trick, {"a": 1})
    assert refused.value.code == "workflow_url_not_allowed" and "backslash" in refused.value.message
    assert foreign.received() == []
    assert requests.get(sandbox.base_url + "/_sandbox/requests", timeout=5).json()["requests"] == []


def test_the_client_still_talks_to_the_base_origin(qualtrics: QualtricsClient) -> None:
    assert qualtrics.whoami()["result"]["datacenter"] == "sandbox"
    contact_id = qualtrics.create_contact("POOL_SANDBOX", {"extRef": "u2"})
    assert [c["id"] for c in qualtrics.search_contacts("POOL_SANDBOX", {"extRef": "u2"})] == [contact_id]


def test_a_relative_next_page_must_be_a_path(qualtrics: QualtricsClient, sandbox: QualtricsSandbox,
                                             foreign: ForeignHost) -> None:
    contact_id = qualtrics.create_contact("POOL_SANDBOX", {"extRef": "u3"})
    for next_page in (f"@127.0.0.1:{foreign.port}/x", f":{foreign.port}/x", f"//127.0.0.1:{foreign.port}/x"):
        fault(sandbox, pathPattern="/transactions$", method="GET", status=200,
              body={"result": {"elements": [], "nextPage": next_page}, "meta": {"httpStatus": "200 - OK"}})
        with pytest.raises(PermanentError) as refused:
            qualtrics.list_contact_transactions("POOL_SANDBOX", contact_id)
        assert refused.value.code == "qualtrics_bad_response" and "outside Qualtrics" in refused.value.message
    assert foreign.received() == []


def test_the_datacenter_must_be_one_name() -> None:
    for datacenter in ("evil.com#", "iad1\n", "127.0.0.1:8766/x#", "iad1.qualtrics.com.evil.example", "a b"):
        with pytest.raises(PermanentError) as refused:
            QualtricsCredentials.from_secret({"apiToken": TOKEN, "datacenter": datacenter})
        assert refused.value.code == "qualtrics_not_configured"
    # Credentials built by hand are checked again where the URL is made.
    client = QualtricsClient(lambda force: QualtricsCredentials(TOKEN, "evil.com#"))
    with pytest.raises(PermanentError) as refused:
        client.whoami()
    assert refused.value.code == "qualtrics_not_configured"


def test_a_body_that_is_not_json_is_a_payload_error_and_sends_nothing(qualtrics: QualtricsClient,
                                                                      sandbox: QualtricsSandbox) -> None:
    with pytest.raises(PermanentError) as refused:
        qualtrics.trigger_workflow(sandbox.base_url + "/inbound-event/v1/events/json/triggers?urlTokenId=t",
                                   {"total": float("nan")})
    assert refused.value.code == "invalid_payload"
    assert requests.get(sandbox.base_url + "/_sandbox/requests", timeout=5).json()["requests"] == []
