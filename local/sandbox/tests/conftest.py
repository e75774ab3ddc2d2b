"""The sandbox's own tests run real HTTP servers on a shared machine, like the integration tests: each may run
up to twice more before it counts as failed, and a rerun shows in the summary (`R`)."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items):
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.flaky(reruns=2, reruns_delay=1))
