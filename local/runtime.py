"""A Lambda-like runtime for one function, in a process of its own (used by the local stack and tests).

Each function runs in its own Python process, as in Lambda: its own environment variables, its own
module-level state kept across invocations (warm starts), its own cold start. The parent talks to it
with one JSON line per invocation; the function's stdout (Powertools' JSON logs) goes to stderr,
which the parent reads as the function's log stream.

Child side:  python -m local.runtime <code_dir> <module.handler> <function_name> <timeout> <memory>
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LAYER = ROOT / "layers" / "common"


class FunctionError(RuntimeError):
    """The handler raised (Lambda reports a function error: the whole SQS batch is retried)."""

    def __init__(self, function: str, error_type: str, message: str, trace: str = "") -> None:
        super().__init__(f"{function}: {error_type}: {message}")
        self.error_type = error_type
        self.trace = trace


class FunctionTimeout(FunctionError):
    pass


class LocalFunction:
    """The parent's handle on one function process. ``invoke`` is serialised, like one Lambda environment."""

    def __init__(self, name: str, code_dir: Path, handler: str, environment: dict[str, str],
                 timeout: float = 30.0, memory: int = 256,
                 on_log: Callable[[str, str], None] | None = None) -> None:
        self.name = name
        self.code_dir = Path(code_dir)
        self.handler = handler
        self.environment = environment
        self.timeout = timeout
        self.memory = memory
        self.on_log = on_log or (lambda name, line: None)
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._log_thread: threading.Thread | None = None
        self.cold_starts = 0
        self.used = False   # invoked since it started: module-level state may have changed

    def _start(self) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_"))}
        env.update(self.environment)
        env["PYTHONPATH"] = os.pathsep.join([str(LAYER), str(ROOT)])
        env["PYTHONUNBUFFERED"] = "1"
        process = subprocess.Popen(
            [sys.executable, "-m", "local.runtime", str(self.code_dir), self.handler, self.name,
             str(self.timeout), str(self.memory)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT,
            text=True, bufsize=1,
        )
        self._log_thread = threading.Thread(target=self._pump_logs, args=(process,), daemon=True)
        self._log_thread.start()
        self.cold_starts += 1
        self.used = False
        return process

    def _pump_logs(self, process: subprocess.Popen) -> None:
        for line in process.stderr:
            self.on_log(self.name, line.rstrip("\n"))

    def warm(self) -> None:
        """Start the process now (its init runs in the background) instead of at the next invoke."""
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._process = self._start()

    def invoke(self, event: dict[str, Any]) -> Any:
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._process = self._start()
            process = self._process
            self.used = True
            process.stdin.write(json.dumps({"event": event}) + "\n")
            process.stdin.flush()
            answer: list[str] = []
            reader = threading.Thread(target=lambda: answer.append(process.stdout.readline()), daemon=True)
            reader.start()
            reader.join(self.timeout + 15)   # + init time on a cold start
            if not answer or not answer[0]:
                self._kill()
                if not answer:
                    raise FunctionTimeout(self.name, "Timeout", f"no answer within {self.timeout} s")
                raise FunctionError(self.name, "Crash", "the function process exited")
            reply = json.loads(answer[0])
        if "error" in reply:
            err = reply["error"]
            if err.get("fatal"):
                self._kill()
            raise FunctionError(self.name, err["type"], err["message"], err.get("trace", ""))
        return reply["result"]

    def crash(self) -> None:
        """Kill the process as a Lambda crash or timeout would: the invocation in flight fails."""
        process = self._process
        if process is not None:
            process.kill()

    def _kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def stop(self) -> None:
        with self._lock:
            if self._process is not None:
                try:
                    self._process.stdin.close()
                    self._process.wait(timeout=5)
                except Exception:  # noqa: BLE001
                    self._process.kill()
                self._process = None
            if self._log_thread is not None:
                self._log_thread.join(timeout=5)   # every line the process wrote has reached on_log


class _Context:
    """The fields of Lambda's context object that handlers and Powertools read."""

    def __init__(self, name: str, timeout: float, memory: int) -> None:
        self.function_name = name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = memory
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _child(code_dir: str, handler: str, name: str, timeout: str, memory: str) -> None:
    # The parent stops this process (EOF on stdin): a Ctrl-C reaching the whole process group is not ours.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)   # the function's prints and logs go to stderr: the parent's log stream
    sys.path.insert(0, code_dir)
    module_name, _, function_name = handler.rpartition(".")
    init_error = None
    try:
        module = __import__(module_name)
        function = getattr(module, function_name)
    except Exception as exc:  # noqa: BLE001 - reported on each invoke, like Lambda's init errors
        init_error = {"type": type(exc).__name__, "message": str(exc), "trace": traceback.format_exc(),
                      "fatal": True}
    for line in sys.stdin:
        request = json.loads(line)
        if init_error:
            protocol.write(json.dumps({"error": init_error}) + "\n")
            continue
        context = _Context(name, float(timeout), int(memory))
        try:
            result = function(request["event"], context)
            protocol.write(json.dumps({"result": result}, default=str) + "\n")
        except Exception as exc:  # noqa: BLE001 - a function error, as Lambda reports it
            sys.stderr.write(traceback.format_exc())
            protocol.write(json.dumps({"error": {"type": type(exc).__name__, "message": str(exc),
                                                 "trace": traceback.format_exc()}}) + "\n")


if __name__ == "__main__":
    _child(*sys.argv[1:6])
