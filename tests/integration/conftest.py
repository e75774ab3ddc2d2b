"""One local stack for the integration tests: moto server, Qualtrics sandbox and function processes.

The stack runs without background pollers: tests move messages with ``stack.drain()``/``stack.pump()``,
so every step is deterministic. ``stack`` resets it (queues, tables, sandbox, cold functions) per test.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
import requests

from local.stack import LocalStack
from tests.integration.sqs_faults import SqsFaultProxy


class Client:
    """What a Segment webhook does: POST signed JSON to the stack's URL."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack

    def sign(self, body: bytes) -> str:
        return hmac.new(self.stack.shared_secret.encode(), body, hashlib.sha1).hexdigest()

    def post(self, payload: Any = None, *, body: bytes | None = None, headers: dict[str, str] | None = None,
             sign: bool = True) -> requests.Response:
        if body is None:
            body = json.dumps(payload).encode()
        sent = {"Content-Type": "application/json"}
        if sign:
            sent["X-Signature"] = self.sign(body)
        sent.update(headers or {})
        return requests.post(self.stack.url, data=body, headers=sent, timeout=30)

    def sandbox(self) -> dict[str, Any]:
        return requests.get(self.stack.sandbox.base_url + "/_sandbox/state", timeout=5).json()

    def contacts(self, directory: str = "POOL_SANDBOX") -> list[dict[str, Any]]:
        return self.sandbox()["directories"][directory]["contacts"]

    def transactions(self, directory: str = "POOL_SANDBOX") -> list[dict[str, Any]]:
        return self.sandbox()["directories"][directory]["transactions"]

    def workflow_runs(self) -> list[dict[str, Any]]:
        return self.sandbox()["workflowRuns"]

    def qualtrics_requests(self, method: str | None = None, path_suffix: str = "") -> list[dict[str, Any]]:
        log = requests.get(self.stack.sandbox.base_url + "/_sandbox/requests", timeout=5).json()["requests"]
        return [r for r in log if (method is None or r["method"] == method) and r["path"].endswith(path_suffix)]

    def fault(self, **spec: Any) -> None:
        answer = requests.post(self.stack.sandbox.base_url + "/_sandbox/faults", json=spec, timeout=5)
        answer.raise_for_status()

    def dead_letters(self, logical_id: str) -> list[dict[str, Any]]:
        messages = self.stack.dead_letters(logical_id)
        return [{k: v.get("StringValue") for k, v in m.get("MessageAttributes", {}).items()} | {"body": m["Body"]}
                for m in messages]


@pytest.fixture(scope="session")
def running_stack():
    stack = LocalStack(http_port=0, sandbox_port=0, environment={"RETRY_BASE_SECONDS": "0"}, on_line=lambda _: None)
    proxy = SqsFaultProxy(stack.endpoint_url).start()
    # Every function reaches SQS through the proxy; it is transparent until a test arms it.
    stack.extra_environment["AWS_ENDPOINT_URL_SQS"] = proxy.url
    stack.start(pollers=False)
    stack.sqs_faults = proxy
    yield stack
    stack.stop()
    proxy.stop()


@pytest.fixture
def stack(running_stack: LocalStack) -> LocalStack:
    running_stack.reset()
    running_stack.sqs_faults.fail_batches = 0
    return running_stack


@pytest.fixture
def client(stack: LocalStack) -> Client:
    return Client(stack)


def pytest_collection_modifyitems(items):
    """Integration tests run real processes against real servers on a shared machine; a few (crash, timeout
    and fault tests) depend on timing. Each may run up to twice more before it counts as failed; a rerun
    is reported in the summary (`R`), so a flaky test stays visible rather than hidden."""
    for item in items:
        if "tests/integration/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.flaky(reruns=2, reruns_delay=1))
