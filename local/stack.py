"""The local stack: runs template.yaml's functions without Docker.

- an embedded AWS endpoint (moto server on 127.0.0.1) with the queues, dead-letter queues, secrets and
  tables the template declares (same logical names, same RedrivePolicy);
- the Qualtrics sandbox (local/sandbox/qualtrics_sandbox.py), unless QUALTRICS_API_TOKEN and
  QUALTRICS_DATACENTER are set: then the real Qualtrics is used;
- ``POST http://127.0.0.1:3000/segment``: each HTTP request becomes the HTTP API (payload v2) event
  the template's route produces, handed to the ingest function;
- the SQS event source of every worker: batch size, batching window, partial batch responses and
  visibility timeouts, with one function process per Lambda (local/runtime.py).

``python -m local.stack`` (``make run``) serves until Ctrl-C; tests drive it with ``pump()``/``drain()``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from segment_qualtrics.delivery.outcomes import Outcome

from local.runtime import FunctionError, LocalFunction
from local.template import load_template

ROOT = Path(__file__).resolve().parent.parent
# Where `make run` tells `make demo`, `make invoke` and `make dlq` about itself (tests point it elsewhere).
STATE_FILE = Path(os.environ.get("LOCAL_STACK_STATE") or ROOT / ".local-stack" / "state.json")
LOCAL_SUBSCRIPTIONS = ROOT / "local" / "subscriptions.json"
REGION = "us-east-1"
# What a queue still holds: visible, in flight, and delayed (DelaySeconds, as the workers' fresh copies of
# rate-limited messages are); a drain that left out the delayed ones returned before they were delivered.
QUEUED_MESSAGES = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                   "ApproximateNumberOfMessagesDelayed")
ACCOUNT = "123456789012"
LOCAL_SHARED_SECRET = "local-shared-secret"   # the events/ingest samples are signed with it
SANDBOX_TOKEN = "sandbox-api-token"
API_GATEWAY_MAX_BODY = 10 * 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Intrinsics:
    """Resolves the CloudFormation intrinsics the template uses against the local resources."""

    def __init__(self, template: dict, parameters: dict[str, str]) -> None:
        self.template = template
        self.parameters = parameters
        self.physical: dict[str, str] = {}            # Ref value per logical id
        self.attributes: dict[tuple[str, str], str] = {}

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                name, attr = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.attributes[(name, attr)]
            if key == "Fn::Sub":
                return self.sub(arg)
            if key == "Fn::Join":
                sep, items = arg
                return sep.join(str(self.resolve(i)) for i in items)
        return {k: self.resolve(v) for k, v in value.items()}

    def ref(self, name: str) -> str:
        pseudo = {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::StackName": "local",
                  "AWS::URLSuffix": "amazonaws.com", "AWS::Partition": "aws"}
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        return self.physical.get(name, name)

    def sub(self, arg: Any) -> str:
        text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))

        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in extra:
                return str(extra[name])
            if "." in name and not name.startswith("AWS::"):
                res, attr = name.split(".", 1)
                return self.attributes.get((res, attr), name)
            return str(self.ref(name))
        return re.sub(r"\$\{([^}!]+)\}", one, text)


class LocalStack:
    def __init__(
        self,
        template: Path = ROOT / "template.yaml",
        *,
        http_port: int = 3000,
        moto_port: int | None = None,
        sandbox_port: int = 0,
        parameters: dict[str, str] | None = None,
        environment: dict[str, str] | None = None,
        shared_secret: str = LOCAL_SHARED_SECRET,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self.template = load_template(template)
        self.http_port = http_port
        self.moto_port = moto_port or free_port()
        self.sandbox_port = sandbox_port
        self.shared_secret = shared_secret
        self.extra_environment = environment or {}
        self.on_line = on_line or (lambda line: print(line, flush=True))
        self.log_lines: list[str] = []        # every raw line the functions wrote (tests read them)
        self.resources = self.template.get("Resources", {})
        defaults = {k: str(v.get("Default", "")) for k, v in self.template.get("Parameters", {}).items()}
        self.intrinsics = Intrinsics(self.template, {**defaults, **(parameters or {})})
        self.functions: dict[str, LocalFunction] = {}
        self._secret_values: dict[str, dict[str, str]] = {}
        self._environments: dict[str, dict[str, str]] = {}
        self._timeouts: dict[str, float] = {}
        self.workers: dict[str, dict[str, Any]] = {}   # logical id -> SQS event properties
        self.sandbox = None
        self._moto = None
        self._http: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    # --- lifecycle --------------------------------------------------------------------------------
    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.moto_port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/segment"

    def client(self, service: str):
        return boto3.client(service, endpoint_url=self.endpoint_url, region_name=REGION,
                            aws_access_key_id="testing", aws_secret_access_key="testing",
                            config=Config(retries={"max_attempts": 2}))

    def start(self, *, pollers: bool = True) -> LocalStack:
        from local.moto_server import LocalAwsServer

        self._moto = LocalAwsServer(self.moto_port).start()
        qualtrics = self._start_qualtrics()
        self._provision(qualtrics)
        self._create_functions(qualtrics)
        self._start_http()
        if pollers:
            for name in self.workers:
                thread = threading.Thread(target=self._poll_forever, args=(name,), daemon=True)
                thread.start()
                self._threads.append(thread)
        return self

    def attach(self, state: dict[str, Any]) -> LocalStack:
        """Functions only, against the resources of the stack `make run` serves (its state file): no servers.

        The running stack's pollers deliver whatever these functions queue. ``stop()`` leaves that stack alone.
        """
        self.moto_port = int(state["awsEndpointUrl"].rsplit(":", 1)[1])
        secrets, sqs = self.client("secretsmanager"), self.client("sqs")
        for name, url in state["queues"].items():
            self.intrinsics.physical[name] = url
            self.intrinsics.attributes[(name, "Arn")] = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"
            self.intrinsics.attributes[(name, "QueueName")] = name
            self.intrinsics.attributes[(name, "QueueUrl")] = url
        for name, resource in self.resources.items():
            if resource.get("Type") == "AWS::SecretsManager::Secret":
                self.intrinsics.physical[name] = secrets.describe_secret(SecretId=name)["ARN"]
            elif resource.get("Type") == "AWS::DynamoDB::Table":
                self.intrinsics.physical[name] = name
                self.intrinsics.attributes[(name, "Arn")] = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"
        sqs.list_queues()   # fails now, clearly, if the endpoint is gone
        qualtrics = {"apiToken": SANDBOX_TOKEN, "datacenter": "sandbox", "baseUrl": state.get("sandboxUrl") or ""}
        if state.get("sandboxUrl"):
            self.sandbox = _RemoteSandbox(state["sandboxUrl"])
        else:   # the running stack uses the real Qualtrics: its secret holds the credentials
            name = next(n for n, r in self.resources.items() if r.get("Type") == "AWS::SecretsManager::Secret"
                        and "apiToken" in str(r.get("Properties", {}).get("SecretString", "")))
            value = json.loads(secrets.get_secret_value(SecretId=name)["SecretString"])
            qualtrics = {"apiToken": value["apiToken"], "datacenter": value["datacenter"],
                         "baseUrl": os.environ.get("QUALTRICS_BASE_URL", "")}
        self._create_functions(qualtrics)
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._http:
            self._http.shutdown()
            self._http.server_close()
        for thread in self._threads:
            thread.join(timeout=25)
        for function in self.functions.values():
            function.stop()
        if self.sandbox:
            self.sandbox.stop()
        if self._moto:
            self._moto.stop()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- Qualtrics --------------------------------------------------------------------------------
    def _start_qualtrics(self) -> dict[str, str]:
        token, datacenter = os.environ.get("QUALTRICS_API_TOKEN"), os.environ.get("QUALTRICS_DATACENTER")
        if token and datacenter:
            return {"apiToken": token, "datacenter": datacenter, "baseUrl": os.environ.get("QUALTRICS_BASE_URL", "")}
        from local.sandbox.qualtrics_sandbox import QualtricsSandbox

        # SANDBOX_LIMITS / SANDBOX_LATENCY / SANDBOX_IMPORTS (JSON) configure limits, latency and imports.
        options = QualtricsSandbox.options_from_environment()
        self.sandbox = QualtricsSandbox(api_token=SANDBOX_TOKEN, port=self.sandbox_port, **options).start()
        return {"apiToken": SANDBOX_TOKEN, "datacenter": "sandbox", "baseUrl": self.sandbox.base_url}

    # --- AWS resources ----------------------------------------------------------------------------
    def _provision(self, qualtrics: dict[str, str]) -> None:
        secrets, dynamodb = self.client("secretsmanager"), self.client("dynamodb")
        kinds = {name: r.get("Type") for name, r in self.resources.items()}
        self._create_queues()
        for name in (n for n, k in kinds.items() if k == "AWS::SecretsManager::Secret"):
            value = self._secret_values[name] = self._secret_value(name, qualtrics)
            arn = secrets.create_secret(Name=name, SecretString=json.dumps(value))["ARN"]
            self.intrinsics.physical[name] = arn
        for name in (n for n, k in kinds.items() if k == "AWS::DynamoDB::Table"):
            props = self.resources[name]["Properties"]
            dynamodb.create_table(TableName=name, KeySchema=props["KeySchema"],
                                  AttributeDefinitions=props["AttributeDefinitions"], BillingMode="PAY_PER_REQUEST")
            ttl = props.get("TimeToLiveSpecification")
            if ttl:
                dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
            self.intrinsics.physical[name] = name
            self.intrinsics.attributes[(name, "Arn")] = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"

    def _queue_names(self) -> list[str]:
        names = [n for n, r in self.resources.items() if r.get("Type") == "AWS::SQS::Queue"]
        # Dead-letter queues first: a source queue's RedrivePolicy names its DLQ's ARN.
        return sorted(names, key=lambda n: "RedrivePolicy" in self.resources[n].get("Properties", {}))

    def _create_queues(self) -> None:
        sqs = self.client("sqs")
        for name in self._queue_names():
            props = self.resources[name].get("Properties", {})
            attributes = {}
            for key in ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds", "MaximumMessageSize",
                        "ReceiveMessageWaitTimeSeconds"):
                if key in props:
                    attributes[key] = str(self.intrinsics.resolve(props[key]))
            if "RedrivePolicy" in props:
                policy = self.intrinsics.resolve(props["RedrivePolicy"])
                policy["maxReceiveCount"] = int(policy["maxReceiveCount"])
                attributes["RedrivePolicy"] = json.dumps(policy)
            url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
            self.intrinsics.physical[name] = url
            self.intrinsics.attributes[(name, "Arn")] = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"
            self.intrinsics.attributes[(name, "QueueName")] = name
            self.intrinsics.attributes[(name, "QueueUrl")] = url

    def reset(self) -> None:
        """Back to a fresh stack for the next test: empty queues and tables, seeded sandbox, cold functions."""
        sqs, dynamodb = self.client("sqs"), self.client("dynamodb")
        for name in self._queue_names():
            sqs.delete_queue(QueueUrl=self.intrinsics.physical[name])   # PurgeQueue allows one a minute
        self._create_queues()
        secrets = self.client("secretsmanager")
        for name, value in self._secret_values.items():
            secrets.put_secret_value(SecretId=name, SecretString=json.dumps(value))
        for name, resource in self.resources.items():
            if resource.get("Type") == "AWS::DynamoDB::Table":
                keys = [k["AttributeName"] for k in resource["Properties"]["KeySchema"]]
                for page in dynamodb.get_paginator("scan").paginate(TableName=name):
                    for item in page["Items"]:
                        dynamodb.delete_item(TableName=name, Key={k: item[k] for k in keys})
        for name, function in self.functions.items():
            changed = (function.environment, function.timeout) != (self._environments[name], self._timeouts[name])
            if function.used or changed:
                function.stop()   # module-level state (caches) goes with the process, as in a new Lambda
            function.environment = dict(self._environments[name])
            function.timeout = self._timeouts[name]
        if self.sandbox:
            self.sandbox.reset()
        self.log_lines.clear()
        for function in self.functions.values():
            function.warm()   # the cold starts overlap instead of adding up

    def configure(self, function: str, **environment: str) -> None:
        """Change a function's environment variables; it restarts cold with them (reset() restores them)."""
        target = self.functions[function]
        target.stop()
        target.environment = {**target.environment, **environment}

    def _secret_value(self, name: str, qualtrics: dict[str, str]) -> dict[str, str]:
        props = self.resources[name].get("Properties", {})
        generated = props.get("GenerateSecretString", {}).get("GenerateStringKey")
        if generated == "sharedSecret":
            return {"sharedSecret": self.shared_secret}
        if "apiToken" in str(props.get("SecretString", "")):
            return {"apiToken": qualtrics["apiToken"], "datacenter": qualtrics["datacenter"]}
        return json.loads(props.get("SecretString") or "{}")

    # --- functions --------------------------------------------------------------------------------
    def _create_functions(self, qualtrics: dict[str, str]) -> None:
        globals_ = self.template.get("Globals", {}).get("Function", {})
        base_env = {
            "AWS_ENDPOINT_URL": self.endpoint_url, "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_DEV": "false",
            "QUALTRICS_DIRECTORY_ID": os.environ.get("QUALTRICS_DIRECTORY_ID", "POOL_SANDBOX"),
            "QUALTRICS_MAILING_LIST_ID": os.environ.get("QUALTRICS_MAILING_LIST_ID", "CG_SANDBOX"),
            "RETRY_BASE_SECONDS": "2",
        }
        # The local subscriptions enable the workflow too, pointed at the sandbox's JSON-event trigger.
        base_env["DESTINATION_CONFIG"] = os.environ.get("DESTINATION_CONFIG") or str(LOCAL_SUBSCRIPTIONS)
        workflow_url = os.environ.get("QUALTRICS_WORKFLOW_URL") or (
            f"{self.sandbox.base_url}/inbound-event/v1/events/json/triggers?urlTokenId=local-demo"
            if self.sandbox else "")
        if workflow_url:
            base_env["QUALTRICS_WORKFLOW_URL"] = workflow_url
        for name, resource in self.resources.items():
            if resource.get("Type") != "AWS::Serverless::Function":
                continue
            props = {**globals_, **resource.get("Properties", {})}
            env = {**globals_.get("Environment", {}).get("Variables", {}),
                   **resource.get("Properties", {}).get("Environment", {}).get("Variables", {})}
            env = {k: str(self.intrinsics.resolve(v)) for k, v in env.items()}
            env.update(base_env)
            if qualtrics["baseUrl"]:
                env["QUALTRICS_BASE_URL"] = qualtrics["baseUrl"]
            env.update(self.extra_environment)
            self.functions[name] = LocalFunction(
                name, ROOT / props["CodeUri"], props.get("Handler", "app.lambda_handler"), env,
                timeout=float(props.get("Timeout", 3)), memory=int(props.get("MemorySize", 128)),
                on_log=self._function_log,
            )
            self._environments[name] = dict(env)
            self._timeouts[name] = float(props.get("Timeout", 3))
            for event in (resource["Properties"].get("Events") or {}).values():
                if event.get("Type") == "SQS":
                    sqs_props = self.intrinsics.resolve(event["Properties"])
                    queue_name = sqs_props["Queue"].rsplit(":", 1)[-1]
                    self.workers[name] = {**sqs_props, "QueueUrl": self.intrinsics.physical[queue_name],
                                          "QueueName": queue_name}

    def function_for_route(self) -> LocalFunction:
        for name, resource in self.resources.items():
            for event in (resource.get("Properties", {}).get("Events") or {}).values():
                if event.get("Type") == "HttpApi" and event["Properties"].get("Path") == "/segment":
                    return self.functions[name]
        raise RuntimeError("template.yaml has no POST /segment route")

    # --- HTTP API ---------------------------------------------------------------------------------
    def _start_http(self) -> None:
        stack = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # the stack prints its own lines
                pass

            def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for key, value in (headers or {"content-type": "application/json"}).items():
                    self.send_header(key, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _route(self) -> None:
                path, _, query = self.path.partition("?")
                length = int(self.headers.get("content-length") or 0)
                if length > API_GATEWAY_MAX_BODY:
                    self._answer(413, b'{"message":"Request Entity Too Large"}')
                    return
                body = self.rfile.read(length) if length else b""
                if self.command != "POST" or path != "/segment":
                    self._answer(404, b'{"message":"Not Found"}')
                    return
                event = stack.http_api_event(self.command, path, query, dict(self.headers.items()), body,
                                             self.client_address[0])
                try:
                    result = stack.function_for_route().invoke(event)
                except FunctionError as exc:
                    stack._say(f"ingest   function error  {exc}")
                    self._answer(500, b'{"message":"Internal Server Error"}')
                    return
                payload = result.get("body") or ""
                data = base64.b64decode(payload) if result.get("isBase64Encoded") else payload.encode()
                self._answer(int(result.get("statusCode", 200)), data, result.get("headers"))

            do_POST = do_GET = do_PUT = do_DELETE = do_PATCH = _route

        self._http = ThreadingHTTPServer(("127.0.0.1", self.http_port), Handler)
        self.http_port = self._http.server_address[1]
        thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        thread.start()

    @staticmethod
    def http_api_event(method: str, path: str, query: str, headers: dict[str, str], body: bytes,
                       source_ip: str = "127.0.0.1") -> dict[str, Any]:
        """The API Gateway HTTP API (payload format 2.0) event for one request."""
        lowered: dict[str, str] = {}
        for key, value in headers.items():
            key = key.lower()
            lowered[key] = f"{lowered[key]},{value}" if key in lowered else value
        try:
            text, encoded = body.decode("utf-8"), False
        except UnicodeDecodeError:
            text, encoded = base64.b64encode(body).decode(), True
        now = datetime.now(UTC)
        return {
            "version": "2.0",
            "routeKey": f"{method} {path}",
            "rawPath": path,
            "rawQueryString": query,
            "headers": lowered,
            "requestContext": {
                "accountId": ACCOUNT, "apiId": "local", "domainName": lowered.get("host", "127.0.0.1"),
                "domainPrefix": "local", "requestId": str(uuid.uuid4()), "routeKey": f"{method} {path}",
                "stage": "$default", "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
                "timeEpoch": int(now.timestamp() * 1000),
                "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": source_ip,
                         "userAgent": lowered.get("user-agent", "")},
            },
            "body": text,
            "isBase64Encoded": encoded,
        }

    # --- SQS event source -------------------------------------------------------------------------
    def _receive(self, sqs, worker: dict[str, Any], wait: int, window: bool = True) -> list[dict[str, Any]]:
        batch_size = int(worker.get("BatchSize", 10))
        window = float(worker.get("MaximumBatchingWindowInSeconds", 0)) if window else 0.0
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + window
        while len(messages) < batch_size:
            answer = sqs.receive_message(
                QueueUrl=worker["QueueUrl"], MaxNumberOfMessages=min(10, batch_size - len(messages)),
                WaitTimeSeconds=wait if not messages else 0, AttributeNames=["All"],
                MessageAttributeNames=["All"], MessageSystemAttributeNames=["All"])
            got = answer.get("Messages", [])
            messages += got
            if not got and (not messages or time.monotonic() >= deadline):
                break
            if not got:
                time.sleep(0.05)
        return messages

    def _sqs_event(self, worker: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
        arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{worker['QueueName']}"
        records = []
        for m in messages:
            attributes = {k: v for k, v in m.get("Attributes", {}).items()}
            message_attributes = {
                k: {"stringValue": v.get("StringValue"), "binaryValue": None, "stringListValues": [],
                    "binaryListValues": [], "dataType": v.get("DataType", "String")}
                for k, v in m.get("MessageAttributes", {}).items()
            }
            records.append({"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                            "attributes": attributes, "messageAttributes": message_attributes,
                            "md5OfBody": m.get("MD5OfBody", ""), "eventSource": "aws:sqs",
                            "eventSourceARN": arn, "awsRegion": REGION})
        return {"Records": records}

    def deliver(self, name: str, sqs=None, wait: int = 0, window: bool = True,
                function: LocalFunction | None = None) -> int:
        """One poll of a worker's queue and one invocation, as Lambda's event source does it.

        ``window=False`` takes what is visible now instead of waiting out the batching window (tests).
        ``function``: another process of the same function (several run at once, as Lambda scales out).
        """
        sqs = sqs or self.client("sqs")
        worker = self.workers[name]
        messages = self._receive(sqs, worker, wait, window)
        if not messages:
            return 0
        try:
            result = (function or self.functions[name]).invoke(self._sqs_event(worker, messages)) or {}
        except FunctionError as exc:
            # A function error fails the whole batch: every message returns after its visibility timeout.
            self._say(f"{_short(name)} function error, batch of {len(messages)} will be retried: {exc}")
            return len(messages)
        failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
        done = [m for m in messages if m["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            sqs.delete_message_batch(QueueUrl=worker["QueueUrl"], Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done[start:start + 10])])
        return len(messages)

    def _poll_forever(self, name: str) -> None:
        sqs = self.client("sqs")
        while not self._stopping.is_set():
            try:
                self.deliver(name, sqs, wait=1)
            except Exception as exc:  # noqa: BLE001 - keep polling, as the event source does
                self._say(f"{_short(name)} poller error: {exc}")
                time.sleep(1)

    def pump(self) -> int:
        """One poll of every worker queue (tests call this instead of running background pollers)."""
        return sum(self.deliver(name, window=False) for name in self.workers)

    def queue_depths(self) -> dict[str, int]:
        """Messages in each queue: visible, in flight, and delayed (a rate-limited message's fresh copy)."""
        sqs = self.client("sqs")
        depths = {}
        for name, resource in self.resources.items():
            if resource.get("Type") == "AWS::SQS::Queue":
                attrs = sqs.get_queue_attributes(QueueUrl=self.intrinsics.physical[name], AttributeNames=[
                    *QUEUED_MESSAGES])["Attributes"]
                depths[name] = sum(int(attrs[a]) for a in QUEUED_MESSAGES)
        return depths

    def drain(self, timeout: float = 60.0) -> None:
        """Pump until every action queue is empty (visible and in flight), or fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        sources = {w["QueueName"] for w in self.workers.values()}
        while time.monotonic() < deadline:
            if self.pump() == 0:
                depths = self.queue_depths()
                if not any(depths[q] for q in sources):
                    return
                time.sleep(0.2)
        raise TimeoutError(f"queues not drained after {timeout} s: {self.queue_depths()}")

    def queue_url(self, logical_id: str) -> str:
        return self.intrinsics.physical[logical_id]

    def dead_letters(self, logical_id: str) -> list[dict[str, Any]]:
        """Peek at a dead-letter queue's messages (they become visible again at once)."""
        sqs = self.client("sqs")
        seen: dict[str, dict[str, Any]] = {}
        for _ in range(5):
            answer = sqs.receive_message(QueueUrl=self.queue_url(logical_id), MaxNumberOfMessages=10,
                                         VisibilityTimeout=2, MessageAttributeNames=["All"],
                                         AttributeNames=["All"])
            for m in answer.get("Messages", []):
                seen[m["MessageId"]] = m
            if not answer.get("Messages"):
                break
        for m in seen.values():
            sqs.change_message_visibility(QueueUrl=self.queue_url(logical_id), ReceiptHandle=m["ReceiptHandle"],
                                          VisibilityTimeout=0)
        return list(seen.values())

    # --- output -----------------------------------------------------------------------------------
    def _function_log(self, function: str, line: str) -> None:
        self.log_lines.append(line)
        text = render_log_line(function, line)
        if text:
            self._say(text)

    def _say(self, text: str) -> None:
        self.on_line(f"{datetime.now().strftime('%H:%M:%S')} {text}")

    def write_state(self) -> None:
        STATE_FILE.parent.mkdir(exist_ok=True)
        queues = {n: self.intrinsics.physical[n] for n, r in self.resources.items()
                  if r.get("Type") == "AWS::SQS::Queue"}
        STATE_FILE.write_text(json.dumps({
            "url": self.url, "sharedSecret": self.shared_secret, "awsEndpointUrl": self.endpoint_url,
            "sandboxUrl": self.sandbox.base_url if self.sandbox else None, "queues": queues,
            "pid": os.getpid()}, indent=2))


class _RemoteSandbox:
    """The sandbox of another process (the running `make run`): its URL, nothing to stop."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def stop(self) -> None:
        pass


def _short(function: str) -> str:
    return function.removesuffix("Function")


def render_log_line(function: str, line: str) -> str | None:
    """One readable line per event as it moves, from a function's JSON log line; None to skip it."""
    try:
        record = json.loads(line)
    except ValueError:
        return f"{_short(function):<25} | {line}" if line.strip() else None
    if not isinstance(record, dict) or "_aws" in record:   # EMF metrics blobs
        return None
    outcome = record.get("outcome")
    if not outcome:
        if record.get("level") in ("WARNING", "ERROR", "CRITICAL"):
            return f"{_short(function):<25} {record.get('level').lower():<13} {record.get('message')}"
        return None
    parts = [f"{_short(function):<25} {outcome:<13}"]   # as logged: the one spelling operators query
    if record.get("action"):
        parts.append(f"{record['action']:<25}")
    if record.get("segmentMessageId"):
        parts.append(f"messageId={record['segmentMessageId']}")
    if record.get("eventType"):
        parts.append(f"{record['eventType']}" + (f" \"{record['eventName']}\"" if record.get("eventName") else ""))
    if record.get("attempt") and outcome != Outcome.DELIVERED:
        parts.append(f"attempt={record['attempt']}")
    for key in ("errorCode", "httpStatus", "code", "status"):
        if record.get(key):
            parts.append(f"{key}={record[key]}")
    reason = record.get("errorMessage") or record.get("reason")
    if reason:
        parts.append(f"— {reason}")
    return " ".join(parts)


class _Stop(Exception):
    """Raised by the signal handler in the main thread: stop the stack."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the Segment → Qualtrics stack locally, without Docker.")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 3000)))
    parser.add_argument("--moto-port", type=int, default=int(os.environ.get("MOTO_PORT", 0)) or None)
    parser.add_argument("--sandbox-port", type=int, default=int(os.environ.get("SANDBOX_PORT", 8765)))
    args = parser.parse_args(argv)
    stack = LocalStack(http_port=args.port, moto_port=args.moto_port, sandbox_port=args.sandbox_port)
    try:
        stack.start()
        stack.write_state()   # for `make demo` and `make dlq` (only the stack `make run` serves)
    except OSError as exc:
        print(f"cannot start the local stack: {exc} (is another `make run` still running?)", file=sys.stderr)
        return 1
    qualtrics = f"Qualtrics sandbox at {stack.sandbox.base_url} (state: {stack.sandbox.base_url}/_sandbox/state)" \
        if stack.sandbox else "the real Qualtrics (QUALTRICS_API_TOKEN and QUALTRICS_DATACENTER are set)"
    print(f"""
Segment → Qualtrics local stack is up.
  Webhook URL      POST {stack.url}
  Shared secret    {stack.shared_secret}   (X-Signature = hex HMAC-SHA1 of the body)
  AWS endpoint     {stack.endpoint_url}   (moto: AWS_ENDPOINT_URL={stack.endpoint_url})
  Qualtrics        {qualtrics}
  Workers          {", ".join(stack.workers)}
Try `make demo` in another terminal. Ctrl-C stops.
""", flush=True)
    received: list[int] = []

    def on_signal(number: int, _frame: object) -> None:
        if received:   # a second Ctrl-C while stopping: leave now (the function processes exit on EOF)
            print("\nlocal stack: stopped at once (second signal)", flush=True)
            os._exit(128 + number)
        received.append(number)
        raise _Stop   # out of the sleep below; no lock taken inside a signal handler

    # Explicitly, for both: a shell starts background jobs with SIGINT ignored, and that would stick.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        while True:
            time.sleep(3600)
    except _Stop:
        pass
    started = time.monotonic()
    stack.stop()
    STATE_FILE.unlink(missing_ok=True)
    name = signal.Signals(received[0]).name if received else "stop"
    print(f"\nlocal stack stopped ({name}): webhook, workers, moto and the sandbox shut down in "
          f"{time.monotonic() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
