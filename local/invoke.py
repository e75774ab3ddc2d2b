"""`make invoke FUNCTION=<LogicalId> EVENT=events/...json`: one function's real handler on one event, no Docker.

The same contract as ``sam local invoke FUNCTION -e EVENT``: the handler of template.yaml's function, with
its environment, timeout and memory, in a process of its own (local/runtime.py). AWS is the local stack's
moto server and Qualtrics its sandbox: those of the running `make run` when there is one (its workers then
deliver what an ingest call queues), else a stack started for this call and stopped after it.

The function's log lines go to stderr as it writes them; the handler's return value (for a worker, its
``batchItemFailures``) is the one JSON document on stdout. Exit status: 0 the handler returned, 1 it
raised or timed out, 2 a usage problem (unknown function, unreadable event).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import requests

from local.runtime import FunctionError
from local.stack import ROOT, STATE_FILE, LocalStack

KNOWN_CONTACT = "CID_KNOWN"


def running_state(path: Path = STATE_FILE) -> dict[str, Any] | None:
    """The state of a live `make run`, or None (no file, or its process is gone)."""
    try:
        state = json.loads(path.read_text())
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state


class UsageError(ValueError):
    pass


def read_event(path: str) -> dict[str, Any]:
    try:
        event = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"{path} not found (the samples are in events/<function>/)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"{path} is not a JSON event: {exc}") from None
    if not isinstance(event, dict):
        raise UsageError(f"{path} must hold one JSON object (a Lambda event)")
    return event


def invoke(function: str, event: dict[str, Any], *, state: dict[str, Any] | None, out: TextIO,
           log: TextIO) -> int:
    def on_line(line: str) -> None:
        print(line, file=log, flush=True)

    stack = LocalStack(http_port=0, sandbox_port=0, on_line=lambda _: None)
    names = [n for n, r in stack.resources.items() if r.get("Type") == "AWS::Serverless::Function"]
    if function not in names:
        print(f"invoke: no function {function!r} in template.yaml; FUNCTION is one of: {', '.join(names)}",
              file=sys.stderr)
        return 2
    if state:
        try:
            stack.attach(state)
        except Exception as exc:  # noqa: BLE001 - a stale state file: say so, then run on a stack of our own
            print(f"invoke: the `make run` stack of {STATE_FILE} does not answer ({type(exc).__name__}); "
                  "starting one for this call", file=log, flush=True)
            state = None
            stack = LocalStack(http_port=0, sandbox_port=0, on_line=lambda _: None)
    where = "the running `make run` stack" if state else "a local stack started for this call"
    print(f"invoke: {function} on {where}", file=log, flush=True)
    if not state:
        stack.start(pollers=False)
        if stack.sandbox:   # the contact events/upsert_contact_transaction/with_contact_id.json names
            requests.post(stack.sandbox.base_url + "/_sandbox/contacts", timeout=5,
                          json={"contactId": KNOWN_CONTACT, "extRef": "user-1002"}).raise_for_status()
    target = stack.functions[function]
    target.on_log = lambda _name, line: on_line(line)
    try:
        result = target.invoke(event)
        status = 0
    except FunctionError as exc:
        result = {"errorType": exc.error_type, "errorMessage": str(exc).split(": ", 2)[-1]}
        status = 1
    finally:
        target.stop()   # flushes its last log lines before the result is printed
        if not state:
            queued = {q: n for q, n in stack.queue_depths().items() if n}
            stack.stop()
    json.dump(result, out, indent=2, default=str)
    out.write("\n")
    if not state and queued:
        print(f"invoke: messages on this one-call stack's queues, discarded with it (with `make run` running, "
              f"its workers deliver them): {json.dumps(queued)}", file=log)
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make invoke", description=__doc__.split("\n")[0])
    parser.add_argument("function", help="logical id in template.yaml, e.g. IngestFunction")
    parser.add_argument("event", help="a Lambda event file, e.g. events/ingest/identify.json")
    args = parser.parse_args(argv)
    try:
        event = read_event(args.event)
    except UsageError as exc:
        print(f"invoke: {exc}", file=sys.stderr)
        return 2
    os.chdir(ROOT)
    return invoke(args.function, event, state=running_state(), out=sys.stdout, log=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
