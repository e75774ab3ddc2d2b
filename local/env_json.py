"""`make env.json`: the function environments for ``sam local invoke --env-vars env.json`` (Docker).

``sam local invoke`` resolves a ``!Ref`` to a queue or a secret as the bare logical id, so the functions would
call AWS with names that do not exist. This writes, per function, the environment the local stack gives it:
the queue URLs, secret ARNs and table names of the running `make run` (its moto server and Qualtrics
sandbox), and the credentials moto accepts. The servers listen on 127.0.0.1: run the container on the host's
network (``--docker-network host``), or set ``DOCKER_HOST_ADDR`` to an address the container reaches them on.

The container has only the function's code and layer: DESTINATION_CONFIG is left out (the packaged
default subscriptions apply), since local/subscriptions.json is not in the container.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from local.invoke import running_state
from local.stack import LocalStack

# Host paths the container cannot see, and names the SAM CLI sets itself.
LEFT_OUT = frozenset({"DESTINATION_CONFIG", "AWS_REGION"})


def environments(stack: LocalStack, host: str = "127.0.0.1") -> dict[str, dict[str, str]]:
    return {name: {k: v.replace("127.0.0.1", host) for k, v in sorted(function.environment.items())
                   if k not in LEFT_OUT}
            for name, function in stack.functions.items()}


def main() -> int:
    state = running_state()
    if state is None:
        print("env.json: start `make run` first (in another terminal): env.json names its queues, secrets and "
              "sandbox", file=sys.stderr)
        return 1
    stack = LocalStack(http_port=0, sandbox_port=0, on_line=lambda _: None).attach(state)
    document: dict[str, Any] = environments(stack, os.environ.get("DOCKER_HOST_ADDR", "127.0.0.1"))
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
