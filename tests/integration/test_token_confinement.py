"""The API token goes only to Qualtrics (docs/security.md), whatever produced the URL.

A "foreign host" (tests/integration/foreign_host.py) listens on 127.0.0.1 next to the local stack's
Qualtrics sandbox, which is QUALTRICS_BASE_URL (http://127.0.0.1:<sandbox port>). Every trick below is
built so that a check reading the URL differently from the HTTP client, or a client following a
redirect, WOULD connect to the foreign host: the foreign host must receive nothing, ever, and each call
must end as a permanent error with a clear code.

Covered: workflow URLs (event data or config), nextPage links (absolute and relative), the datacenter
(make check-qualtrics), and a 30x to the foreign host on every call that carries the token: create
contact, search, create transactions, list transactions (first page and a nextPage), workflow, whoami
(the health check, check-qualtrics and the worker's startup check). Then through the workers: the dead
letter names the reason.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from segment_qualtrics.adapters.health import check_whoami
from segment_qualtrics.adapters.qualtrics import QualtricsClient, QualtricsCredentials
from segment_qualtrics.destination.errors import PermanentError
from segment_qualtrics.runtime.worker_app import qualtrics_startup_check
from segment_qualtrics.tools import cli

from local.stack import SANDBOX_TOKEN, LocalStack
from tests.integration.foreign_host import ForeignHost
from tests.integration.test_pipeline import identify
from tests.integration.test_transactions_workflows import transaction

WORKFLOW_PATH = "/inbound-event/v1/events/json/triggers?urlTokenId=stolen"
POOL = "POOL_SANDBOX"

# {F}: the foreign host's port; {S}: the sandbox's host:port (QUALTRICS_BASE_URL's origin).
URL_TRICKS = [
    "http://127.0.0.1:{F}\\@{S}/",                 # urlsplit reads {S}; urllib3 stops the host at the backslash
    "http://localhost:{F}\\@{S}/",
    "http://127.0.0.1:{F}\\\\@{S}/",
    "http://{S}\\@127.0.0.1:{F}/",                 # the other way round
    "http://127.0.0.1:{F}%5C@{S}/",                # the backslash percent-encoded
    "http://127.0.0.1:{F}%40{S}/",
    "http://localhost:{F}#@{S}/",                  # fragment / query / path before the @
    "http://localhost:{F}?@{S}/",
    "http://localhost:{F}/@{S}/",
    "http://127.0.0.1:{F};@{S}/",
    "http://{S}@127.0.0.1:{F}/",                   # userinfo
    "http://user:pw@127.0.0.1:{F}/",
    "http://127.0.0.1:{F}/",                       # the foreign origin itself, in many spellings
    "http://localhost:{F}/",
    "http://LOCALHOST:{F}/",
    "HTTP://127.0.0.1:{F}/",
    "https://127.0.0.1:{F}/",
    "http://127.0.0.1.:{F}/",                      # trailing dots
    "http://localhost.:{F}/",
    "http://127.1:{F}/",                           # other IPv4 spellings
    "http://0x7f.0.0.1:{F}/",
    "http://0177.0.0.1:{F}/",
    "http://2130706433:{F}/",
    "http://[::ffff:127.0.0.1]:{F}/",
    "http://127\u30020\u30020\u30021:{F}/",        # ideographic full stops
    "http://127\uff0e0\uff0e0\uff0e1:{F}/",        # fullwidth full stops
    "http://\uff11\uff12\uff17.0.0.1:{F}/",        # fullwidth digits (NFKC makes them 127)
    "http://127.0.0.1:{F}\u200b@{S}/",             # zero-width space
    "http://127.0.0.1:{F}\t@{S}/",                 # whitespace and control characters
    "http://127.0.0.1:{F}\n@{S}/",
    "http://127.0.0.1:{F}\x00@{S}/",
    " http://127.0.0.1:{F}/",
    "http://127.0.0.1:{F}/\r\nX-Injected: 1",
    "http:/127.0.0.1:{F}/",                        # malformed schemes
    "http:\\\\127.0.0.1:{F}/",
    "//127.0.0.1:{F}/",
    "http://{S}:{F}/",                             # two ports
    "http://127.0.0.1:{F}#.qualtrics.com",         # Qualtrics' name where it is not the host
    "https://127.0.0.1:{F}/.qualtrics.com/",
    "https://qualtrics.com.localhost:{F}/",
    "https://iad1.qualtrics.com@127.0.0.1:{F}/",
    "https://iad1.qualtrics.com:{F}/",             # Qualtrics' name, a foreign port
]
# Relative nextPage links: glued onto the base URL they would make another host.
RELATIVE_TRICKS = ["@127.0.0.1:{F}/x", "@localhost:{F}/x", ":{F}/x", "\\@127.0.0.1:{F}/x", "//127.0.0.1:{F}/x",
                   "x@127.0.0.1:{F}/", ".localhost:{F}/", "%40127.0.0.1:{F}/"]


@pytest.fixture(scope="module")
def foreign() -> Iterator[ForeignHost]:
    host = ForeignHost().start()
    yield host
    host.stop()


@pytest.fixture
def sandbox(running_stack: LocalStack, foreign: ForeignHost) -> str:
    """The stack's sandbox, reset (no other part of the stack is needed for the client-level tests)."""
    requests.post(running_stack.sandbox.base_url + "/_sandbox/reset", timeout=5).raise_for_status()
    foreign.clear()
    return running_stack.sandbox.base_url


@pytest.fixture
def qualtrics(sandbox: str) -> QualtricsClient:
    return QualtricsClient.with_token(SANDBOX_TOKEN, "sandbox", sandbox)


def trick(template: str, foreign: ForeignHost, sandbox: str) -> str:
    return template.replace("{F}", str(foreign.port)).replace("{S}", sandbox.split("://", 1)[1])


def fault(sandbox: str, **spec: Any) -> None:
    requests.post(sandbox + "/_sandbox/faults", json=spec, timeout=5).raise_for_status()


def sandbox_log(sandbox: str) -> list[dict[str, Any]]:
    return requests.get(sandbox + "/_sandbox/requests", timeout=5).json()["requests"]


# ------------------------------------------------------------------------------------------------ URL tricks

def test_there_are_at_least_30_tricks() -> None:
    assert len(URL_TRICKS) + len(RELATIVE_TRICKS) >= 30 and len(set(URL_TRICKS)) == len(URL_TRICKS)


@pytest.mark.parametrize("template", URL_TRICKS)
def test_a_workflow_url_trick_sends_nothing(template: str, qualtrics: QualtricsClient, sandbox: str,
                                            foreign: ForeignHost) -> None:
    url = trick(template, foreign, sandbox) + WORKFLOW_PATH
    with pytest.raises(PermanentError) as refused:
        qualtrics.trigger_workflow(url, {"event": "x"})
    assert refused.value.code == "workflow_url_not_allowed"
    assert "QUALTRICS_BASE_URL" in refused.value.message
    assert foreign.received() == []
    assert sandbox_log(sandbox) == []


@pytest.mark.parametrize("template", URL_TRICKS + RELATIVE_TRICKS)
def test_a_next_page_trick_sends_nothing(template: str, qualtrics: QualtricsClient, sandbox: str,
                                         foreign: ForeignHost) -> None:
    next_page = trick(template, foreign, sandbox)
    fault(sandbox, pathPattern="/transactions$", method="GET", status=200,
          body={"result": {"elements": [{"transactionId": "CTR_1"}], "nextPage": next_page},
                "meta": {"httpStatus": "200 - OK"}})
    with pytest.raises(PermanentError) as refused:
        qualtrics.list_contact_transactions(POOL, "CID_ANY")
    assert refused.value.code == "qualtrics_bad_response" and "outside Qualtrics" in refused.value.message
    assert foreign.received() == []
    assert len(sandbox_log(sandbox)) == 1   # the first page only


@pytest.mark.parametrize("datacenter", ["evil.com#", "127.0.0.1:{F}/x#", "localhost:{F}#", "127.0.0.1:{F}?",
                                        "127.0.0.1:{F}\\", "iad1\n", "iad1.qualtrics.com@127.0.0.1:{F}/#"])
def test_a_datacenter_trick_in_check_qualtrics_sends_nothing(datacenter: str, sandbox: str, foreign: ForeignHost,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUALTRICS_API_TOKEN", SANDBOX_TOKEN)
    monkeypatch.setenv("QUALTRICS_DATACENTER", trick(datacenter, foreign, sandbox))
    monkeypatch.delenv("QUALTRICS_BASE_URL", raising=False)
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["check-qualtrics"], out=out, err=err) == 1
    assert "^[a-zA-Z0-9-]+$" in err.getvalue() and SANDBOX_TOKEN not in out.getvalue() + err.getvalue()
    assert foreign.received() == []


def test_credentials_built_by_hand_are_checked_where_the_url_is_made(sandbox: str, foreign: ForeignHost) -> None:
    client = QualtricsClient(lambda force: QualtricsCredentials(SANDBOX_TOKEN, f"127.0.0.1:{foreign.port}/#"))
    report = check_whoami(client)
    assert not report.ok and "^[a-zA-Z0-9-]+$" in report.problems[0]
    assert foreign.received() == []


# ------------------------------------------------------------------------------------------------ redirects

CALLS: dict[str, tuple[str, str, Callable[[QualtricsClient, str], Any]]] = {
    "whoami": ("GET", "/whoami$", lambda q, s: q.whoami()),
    "create contact": ("POST", "/contacts$", lambda q, s: q.create_contact(POOL, {"extRef": "u"})),
    "search": ("POST", "/contacts/search$", lambda q, s: q.search_contacts(POOL, {"extRef": "u"})),
    "create transactions": ("POST", "/transactions$", lambda q, s: q.create_transactions(POOL, {"k": {}})),
    "list transactions": ("GET", "/transactions$", lambda q, s: q.list_contact_transactions(POOL, "CID_ANY")),
    "list transactions, nextPage": ("GET", "/transactions$",
                                    lambda q, s: q.list_contact_transactions(POOL, "CID_ANY")),
    "workflow": ("POST", "/triggers$", lambda q, s: q.trigger_workflow(s + WORKFLOW_PATH, {"event": "x"})),
}


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("call", list(CALLS))
def test_a_redirect_to_the_foreign_host_is_not_followed(call: str, status: int, qualtrics: QualtricsClient,
                                                        sandbox: str, foreign: ForeignHost) -> None:
    method, path, run = CALLS[call]
    location = f"http://127.0.0.1:{foreign.port}/steal"
    if call == "list transactions, nextPage":
        # Faults apply in order: a first page whose nextPage is a path on the sandbox, then the redirect.
        fault(sandbox, pathPattern=path, method=method, status=200, body={"result": {
            "elements": [], "nextPage": f"/API/v3/directories/{POOL}/contacts/CID_ANY/transactions?p=2"}, "meta": {}})
    fault(sandbox, pathPattern=path, method=method, status=status, location=location)
    with pytest.raises(PermanentError) as redirected:
        run(qualtrics, sandbox)
    error = redirected.value
    assert (error.code, error.status) == ("qualtrics_redirect", status)
    assert f"answered {status}" in error.message and f"'127.0.0.1:{foreign.port}'" in error.message
    assert foreign.received() == []
    assert [r["status"] for r in sandbox_log(sandbox)][-1] == status


def test_the_whoami_check_reports_a_redirect_and_follows_none(qualtrics: QualtricsClient, sandbox: str,
                                                              foreign: ForeignHost) -> None:
    fault(sandbox, pathPattern="/whoami$", status=302, location=f"http://127.0.0.1:{foreign.port}/API/v3/whoami")
    report = check_whoami(qualtrics)
    assert (report.ok, report.status) == (False, 302)
    assert "answered 302" in report.problems[0] and "redirects are not followed" in report.problems[0]
    assert foreign.received() == []


def test_check_qualtrics_follows_no_redirect(sandbox: str, foreign: ForeignHost,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUALTRICS_API_TOKEN", SANDBOX_TOKEN)
    monkeypatch.setenv("QUALTRICS_DATACENTER", "sandbox")
    monkeypatch.setenv("QUALTRICS_BASE_URL", sandbox)
    fault(sandbox, pathPattern="/whoami$", status=307, location=f"http://127.0.0.1:{foreign.port}/API/v3/whoami")
    out = io.StringIO()
    assert cli.main(["check-qualtrics"], out=out) == 1
    assert "-> 307" in out.getvalue() and "redirects are not followed" in out.getvalue()
    assert foreign.received() == []


def test_the_worker_startup_check_follows_no_redirect(qualtrics: QualtricsClient, sandbox: str,
                                                      foreign: ForeignHost) -> None:
    fault(sandbox, pathPattern="/whoami$", status=308, location=f"http://127.0.0.1:{foreign.port}/API/v3/whoami")
    credentials = QualtricsCredentials(SANDBOX_TOKEN, "sandbox")
    qualtrics_startup_check(lambda force: credentials, qualtrics, None)   # logs a warning, never raises
    assert [(r["path"], r["status"]) for r in sandbox_log(sandbox)] == [("/API/v3/whoami", 308)]
    assert foreign.received() == []


# ------------------------------------------------------------------------------------------------ the workers

def test_a_redirect_dead_letters_the_message_with_its_reason(stack: LocalStack, client, foreign: ForeignHost) -> None:
    foreign.clear()
    location = f"http://127.0.0.1:{foreign.port}/steal"
    client.fault(pathPattern="/contacts$", method="POST", status=302, location=location)
    assert client.post(identify(1)).status_code == 200
    stack.drain()
    client.fault(pathPattern="/transactions$", method="POST", status=301, location=location)
    client.fault(pathPattern="/triggers$", status=307, location=location)
    assert client.post(transaction(1)).status_code == 200
    stack.drain()
    for queue, status in (("AddContactToXmdDeadLetterQueue", 302),
                          ("UpsertContactTransactionDeadLetterQueue", 301),
                          ("TriggerXflowWorkflowDeadLetterQueue", 307)):
        [dead] = client.dead_letters(queue)
        assert dead["errorCode"] == "qualtrics_redirect", dead
        assert f"answered {status}" in dead["errorMessage"] and str(foreign.port) in dead["errorMessage"]
    assert foreign.received() == []


def test_a_backslash_workflow_url_is_dead_lettered_and_sends_nothing(stack: LocalStack, client,
                                                                     foreign: ForeignHost) -> None:
    foreign.clear()
    sandbox_host = stack.sandbox.base_url.split("://", 1)[1]
    stack.configure("TriggerXflowWorkflowFunction",
                    QUALTRICS_WORKFLOW_URL=f"http://127.0.0.1:{foreign.port}\\@{sandbox_host}{WORKFLOW_PATH}")
    client.post(transaction(1))
    stack.drain()
    [dead] = client.dead_letters("TriggerXflowWorkflowDeadLetterQueue")
    assert dead["errorCode"] == "workflow_url_not_allowed" and "backslash" in dead["errorMessage"]
    assert client.workflow_runs() == [] and foreign.received() == []


def test_the_sandbox_redirect_fault_is_validated(sandbox: str) -> None:
    refused = requests.post(sandbox + "/_sandbox/faults", timeout=5,
                            json={"pathPattern": "/whoami$", "status": 302, "location": "http://x/\r\nSet-Cookie: a"})
    assert refused.status_code == 400 and "location" in refused.text
    fault(sandbox, pathPattern="/whoami$", status=302, location="https://elsewhere.example/")
    [pending] = requests.get(sandbox + "/_sandbox/faults", timeout=5).json()["faults"]
    assert pending["location"] == "https://elsewhere.example/"
    answer = requests.get(sandbox + "/API/v3/whoami", headers={"X-API-TOKEN": SANDBOX_TOKEN}, timeout=5,
                          allow_redirects=False)
    assert (answer.status_code, answer.headers["Location"]) == (302, "https://elsewhere.example/")
