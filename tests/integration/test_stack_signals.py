"""`make run` (python -m local.stack) stops quietly on SIGINT and SIGTERM, however they arrive.

A terminal's Ctrl-C reaches the whole process group (the function processes too); a shell starts a
background job with SIGINT ignored, which Python would keep; a supervisor sends SIGTERM to the parent only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]


def _start(tmp_path: Path, *, ignore_sigint: bool) -> subprocess.Popen:
    env = {**os.environ, "LOCAL_STACK_STATE": str(tmp_path / "state.json"), "PYTHONUNBUFFERED": "1"}

    def child_setup() -> None:
        if ignore_sigint:   # what `cmd &` in a non-interactive shell does
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    return subprocess.Popen([sys.executable, "-m", "local.stack", "--port", "0", "--sandbox-port", "0"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, preexec_fn=child_setup)


def _wait_until_up(process: subprocess.Popen, state: Path) -> list[str]:
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "Ctrl-C stops" in line:
            break
    assert state.exists(), "".join(lines)
    return lines


@pytest.mark.parametrize(("how", "number", "ignore_sigint"), [
    ("group", signal.SIGINT, False),       # Ctrl-C in a terminal: every process of the group
    ("parent", signal.SIGINT, True),       # kill -INT on a background `make run &`
    ("parent", signal.SIGTERM, False),
    ("group", signal.SIGTERM, True),
])
def test_a_signal_stops_everything_quietly(tmp_path: Path, how: str, number: int, ignore_sigint: bool) -> None:
    process = _start(tmp_path, ignore_sigint=ignore_sigint)
    # Reading stdout blocks: a stack that never gets there is killed, and the test fails instead of hanging.
    watchdog = threading.Timer(240, lambda: os.killpg(process.pid, signal.SIGKILL))
    watchdog.start()
    try:
        _wait_until_up(process, tmp_path / "state.json")
        # Start the ingest and a worker process, so a group signal reaches function processes too.
        state = json.loads((tmp_path / "state.json").read_text())
        event = json.loads((ROOT / "events" / "ingest" / "identify.json").read_text())
        answer = requests.post(state["url"], data=event["body"].encode(), timeout=30,
                               headers={"X-Signature": event["headers"]["x-signature"],
                                        "Content-Type": "application/json"})
        assert answer.status_code == 200, answer.text
        for line in process.stdout:
            if "delivered" in line:
                break
        if how == "group":
            os.killpg(process.pid, number)
        else:
            process.send_signal(number)
        try:
            rest, _ = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            rest, _ = process.communicate()
            pytest.fail(f"still running 120 s after {signal.Signals(number).name}; its output:\n{rest}")
    finally:
        watchdog.cancel()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, rest
    assert "Traceback" not in rest and "KeyboardInterrupt" not in rest, rest
    [summary] = [line for line in rest.splitlines() if "local stack stopped" in line]
    assert signal.Signals(number).name in summary
    assert not (tmp_path / "state.json").exists()
    time.sleep(0.5)
    leftovers = subprocess.run(["pgrep", "-s", str(process.pid)], capture_output=True, text=True).stdout.split()
    assert leftovers == [], "function processes outlived the stack"
