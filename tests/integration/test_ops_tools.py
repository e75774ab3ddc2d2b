"""The post-deploy checks: the whoami check (health.py) and ``segment-qualtrics`` smoke / check-qualtrics.

Against conftest's local stack and its Qualtrics sandbox; ``responses`` only for what the sandbox cannot
answer (a wrong-datacenter notice, a refused connection).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import requests
import responses
from segment_qualtrics.adapters.health import check_whoami
from segment_qualtrics.adapters.qualtrics import QualtricsClient
from segment_qualtrics.tools import cli, ops_commands

from local.stack import SANDBOX_TOKEN, LocalStack


def state_file(stack: LocalStack, tmp_path: Path) -> Path:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"url": stack.url, "sharedSecret": stack.shared_secret,
                                "awsEndpointUrl": stack.endpoint_url}))
    return path


def test_whoami_against_the_sandbox(stack: LocalStack) -> None:
    good = check_whoami(QualtricsClient.with_token(SANDBOX_TOKEN, base_url=stack.sandbox.base_url))
    assert (good.ok, good.status, good.datacenter) == (True, 200, "sandbox")
    assert "email" not in json.dumps(good.log_fields()) and "userName" not in good.log_fields()
    bad = check_whoami(QualtricsClient.with_token("not-the-token", base_url=stack.sandbox.base_url))
    assert (bad.ok, bad.status) == (False, 401)
    assert "apiToken" in bad.problems[0]


@responses.activate
def test_whoami_warns_about_a_proxied_datacenter_and_never_raises() -> None:
    responses.get("https://iad1.qualtrics.com/API/v3/whoami", json={
        "result": {"brandId": "acme", "datacenter": "sjc1"},
        "meta": {"httpStatus": "200 - OK", "requestId": "r1",
                 "notice": "Request proxied. For faster response times, use this host instead: sjc1.qualtrics.com"}})
    report = check_whoami(QualtricsClient.with_token("token", "iad1"), expected_datacenter="iad1")
    assert report.status == 200 and not report.ok
    assert any("sjc1.qualtrics.com" in p for p in report.problems)
    assert any("the secret says datacenter 'iad1'" in p for p in report.problems)

    responses.get("https://down.qualtrics.com/API/v3/whoami", body=requests.ConnectionError("refused"))
    down = check_whoami(QualtricsClient.with_token("token", "down"))
    assert (down.ok, down.status) == (False, None) and "could not reach" in down.problems[0]


def test_smoke_sends_a_signed_event(stack: LocalStack, tmp_path: Path) -> None:
    out = io.StringIO()
    assert cli.main(["smoke", "--state", str(state_file(stack, tmp_path))], out=out) == 0
    assert "-> 200" in out.getvalue() and '"addContactToXmd":1' in out.getvalue()
    stack.drain()
    sandbox = requests.get(f"{stack.sandbox.base_url}/_sandbox/state", timeout=5).json()
    contacts = sandbox["directories"]["POOL_SANDBOX"]["contacts"]
    assert [c["extRef"] for c in contacts] == [ops_commands.SMOKE_USER]


def test_smoke_reports_a_wrong_secret(stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGMENT_SHARED_SECRET", "not-the-secret")
    out = io.StringIO()
    assert cli.main(["smoke", "--url", stack.url, "--event", "track"], out=out) == 1
    assert "-> 401" in out.getvalue() and "shared secret does not match" in out.getvalue()
    assert "not-the-secret" not in out.getvalue()


def test_check_qualtrics_from_the_environment(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUALTRICS_API_TOKEN", SANDBOX_TOKEN)
    monkeypatch.setenv("QUALTRICS_DATACENTER", "sandbox")
    monkeypatch.setenv("QUALTRICS_BASE_URL", stack.sandbox.base_url)
    out = io.StringIO()
    assert cli.main(["check-qualtrics"], out=out) == 0
    assert "-> 200" in out.getvalue() and "OK" in out.getvalue() and SANDBOX_TOKEN not in out.getvalue()
    monkeypatch.setenv("QUALTRICS_API_TOKEN", "wrong-token")
    out = io.StringIO()
    assert cli.main(["check-qualtrics"], out=out) == 1
    assert "WARN" in out.getvalue() and "401" in out.getvalue()
