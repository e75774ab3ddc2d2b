"""A Qualtrics sandbox of a test module's own, and an HTTP client for it (the sandbox's limits and imports tests)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import requests

from local.sandbox.qualtrics_sandbox import QualtricsSandbox


def own_sandbox(token: str) -> Iterator[QualtricsSandbox]:
    """For a module-scoped fixture: a sandbox on a free port, stopped after the module."""
    sandbox = QualtricsSandbox(token, port=0).start()
    yield sandbox
    sandbox.stop()


class SandboxApi:
    """Calls with the module's API token; subclasses add the calls their tests make."""

    token = ""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.session.headers["X-API-TOKEN"] = self.token

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, self.base_url + path, timeout=30, **kwargs)
