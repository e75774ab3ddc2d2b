"""AWS cost per million events, from what one run through the real handlers actually used.

Runs identify and transaction events through the local stack (every transaction event also starts the
workflow, as the local subscriptions say) and counts, per function:
- Lambda invocations and their measured durations (GB-seconds with the template's memory, arm64 prices);
- AWS API calls the function made (a counting proxy in front of moto): SQS requests, DynamoDB writes and
  reads (on-demand units: every item here is under 1 KB, so one write or one strongly consistent read is
  one unit), Secrets Manager calls;
- the event source's own SQS requests (one ReceiveMessage and one DeleteMessageBatch per batch; the idle
  long polls are a fixed monthly cost, not per event);
- CloudWatch Logs bytes (every line the function wrote, EMF metrics included);
- API Gateway requests (one per webhook POST of ``--post-size`` events).

    .venv/bin/python bench/cost.py [--events 300] [--post-size 50] [--batch-size 10] [--latency 0.3] [--concurrency 10]
                             [--no-rate-limit]

The prices are in PRICES, with their date: check them against https://aws.amazon.com/pricing before quoting.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import sys
import threading
import time
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "layers" / "common"), str(ROOT)]

from local.runtime import LocalFunction  # noqa: E402
from local.stack import LocalStack  # noqa: E402

# us-east-1 list prices, on-demand, as published in 2025 (the date they were read: 2025-06). Per unit.
PRICES_DATE = "2025-06, us-east-1"
PRICES = {
    "api_request": 1.00 / 1e6,            # HTTP API, per request (first 300 M a month)
    "lambda_request": 0.20 / 1e6,         # per invocation
    "lambda_gb_second": 0.0000133334,     # arm64, first 7.5 B GB-s a month
    "sqs_request": 0.40 / 1e6,            # standard queue, per request (each 64 KiB of payload is one)
    "dynamodb_write": 0.625 / 1e6,        # on-demand, per write request unit
    "dynamodb_read": 0.125 / 1e6,         # on-demand, per read request unit
    "secrets_call": 0.05 / 10_000,        # Secrets Manager, per API call
    "log_byte": 0.50 / 2**30,             # CloudWatch Logs ingestion (standard), per byte
}
FUNCTIONS = {   # function -> the action its line is, and what one "event" of that line is
    "IngestFunction": "ingest (per event received)",
    "AddContactToXmdFunction": "addContactToXmd",
    "UpsertContactTransactionFunction": "upsertContactTransaction",
    "TriggerXflowWorkflowFunction": "triggerXflowWorkflow",
}
DYNAMODB_WRITES = {"PutItem", "UpdateItem", "DeleteItem"}
DYNAMODB_READS = {"GetItem"}


class CountingProxy:
    """Forwards AWS API calls to moto and counts them by operation (X-Amz-Target)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                target = self.headers.get("x-amz-target", "")
                with proxy._lock:
                    proxy.calls[target.rsplit(".", 1)[-1] if target else "other"] += 1
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = requests.post(proxy.upstream + self.path, data=body, headers=headers, timeout=60)
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding",
                                           "server", "date"):
                        self.send_header(key, value)
                self.send_header("content-length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

        return Handler


class Invocations:
    """Every invoke of every LocalFunction: its function, measured seconds and records."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, float, int]] = []
        original = LocalFunction.invoke
        recorder = self

        def timed(function: LocalFunction, event: dict[str, Any]) -> Any:
            started = time.perf_counter()
            try:
                return original(function, event)
            finally:
                recorder.seen.append((function.name, time.perf_counter() - started, len(event.get("Records") or [1])))

        LocalFunction.invoke = timed


def identify(i: int) -> dict[str, Any]:
    return {"type": "identify", "messageId": f"cost-id-{i}", "userId": f"cost-user-{i}",
            "traits": {"email": f"cost-user-{i}@example.com", "firstName": "Ada"}}


def transaction(i: int, customers: int) -> dict[str, Any]:
    customer = i % customers
    return {"type": "track", "event": "Transaction Created", "messageId": f"cost-tx-{i}", "userId": f"cust-{customer}",
            "traits": {"email": f"cust-{customer}@example.com"}, "properties": {"total": i, "currency": "EUR"}}


def run(args: argparse.Namespace) -> tuple[dict[str, dict[str, float]], int, int]:
    environment = {"RETRY_BASE_SECONDS": "2", "QUALTRICS_BATCH_CONCURRENCY": str(args.concurrency)}
    if args.no_rate_limit:
        environment["RATE_LIMIT_ENABLED"] = "false"
    stack = LocalStack(http_port=0, sandbox_port=0, environment=environment, on_line=lambda _: None)
    invocations = Invocations()
    stack.start(pollers=False)
    proxies: dict[str, CountingProxy] = {}
    try:
        for name in FUNCTIONS:   # one proxy per function: each call is counted against its caller
            proxies[name] = CountingProxy(stack.endpoint_url)
            stack.configure(name, AWS_ENDPOINT_URL=proxies[name].url)
        for worker in stack.workers.values():
            worker["BatchSize"] = args.batch_size
        customers = max(5, args.events // 20)
        for k in range(customers):
            requests.post(stack.sandbox.base_url + "/_sandbox/contacts", timeout=5, json={
                "contactId": f"CID_cust-{k}", "extRef": f"cust-{k}", "email": f"cust-{k}@example.com"}
            ).raise_for_status()
        requests.post(stack.sandbox.base_url + "/_sandbox/latency", json={"seconds": args.latency},
                      timeout=5).raise_for_status()
        stack.log_lines.clear()
        events = [identify(i) for i in range(args.events)] + [transaction(i, customers) for i in range(args.events)]
        posts = 0
        for start in range(0, len(events), args.post_size):
            body = json.dumps(events[start:start + args.post_size]).encode()
            signature = hmac.new(stack.shared_secret.encode(), body, hashlib.sha1).hexdigest()
            requests.post(stack.url, data=body, timeout=60, headers={
                "Content-Type": "application/json", "X-Signature": signature}).raise_for_status()
            posts += 1
        stack.drain(timeout=600)
        time.sleep(0.5)   # the last log lines
        usage: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        memory = {name: function.memory for name, function in stack.functions.items()}
        for name, seconds, records in invocations.seen:
            if name not in FUNCTIONS:
                continue
            use = usage[name]
            use["invocations"] += 1
            use["gb_seconds"] += memory[name] / 1024 * (int(seconds * 1000) + 1) / 1000   # billed per started ms
            if name != "IngestFunction":
                use["sqs_requests"] += 2   # the event source: ReceiveMessage, DeleteMessageBatch
                use["records"] += records
        for name, proxy in proxies.items():
            calls = proxy.calls
            usage[name]["sqs_requests"] += sum(n for op, n in calls.items() if op in (
                "SendMessage", "SendMessageBatch", "ChangeMessageVisibility", "ChangeMessageVisibilityBatch",
                "ReceiveMessage", "DeleteMessage", "DeleteMessageBatch", "GetQueueAttributes"))
            usage[name]["dynamodb_writes"] += sum(n for op, n in calls.items() if op in DYNAMODB_WRITES)
            usage[name]["dynamodb_reads"] += sum(n for op, n in calls.items() if op in DYNAMODB_READS)
            usage[name]["secrets_calls"] += calls.get("GetSecretValue", 0)
        for line in stack.log_lines:
            for name in FUNCTIONS:
                if f'"function_name":"{name}"' in line or f'"function_name": "{name}"' in line:
                    usage[name]["log_bytes"] += len(line.encode()) + 1
                    break
            else:
                # EMF metric blobs carry no function name: their "action" (or none: the ingest) says whose
                for name, action in FUNCTIONS.items():
                    if f'"action":"{action}"' in line:
                        usage[name]["log_bytes"] += len(line.encode()) + 1
                        break
                else:
                    usage["IngestFunction"]["log_bytes"] += len(line.encode()) + 1
        usage["IngestFunction"]["api_requests"] = posts
        usage["IngestFunction"]["records"] = len(events)
        return usage, len(events), posts
    finally:
        stack.stop()
        for proxy in proxies.values():
            proxy.stop()


def cost(use: dict[str, float]) -> dict[str, float]:
    return {
        "API Gateway": use.get("api_requests", 0) * PRICES["api_request"],
        "Lambda": use.get("invocations", 0) * PRICES["lambda_request"]
        + use.get("gb_seconds", 0) * PRICES["lambda_gb_second"],
        "SQS": use.get("sqs_requests", 0) * PRICES["sqs_request"],
        "DynamoDB": use.get("dynamodb_writes", 0) * PRICES["dynamodb_write"]
        + use.get("dynamodb_reads", 0) * PRICES["dynamodb_read"],
        "Secrets Manager": use.get("secrets_calls", 0) * PRICES["secrets_call"],
        "CloudWatch Logs": use.get("log_bytes", 0) * PRICES["log_byte"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300, help="identify events, and as many transaction events")
    parser.add_argument("--post-size", type=int, default=50, help="events per webhook request")
    parser.add_argument("--batch-size", type=int, default=10, help="SQS event source BatchSize of the workers")
    parser.add_argument("--latency", type=float, default=0.3, help="seconds the sandbox adds to every call")
    parser.add_argument("--concurrency", type=int, default=10, help="QUALTRICS_BATCH_CONCURRENCY (1: calls in turn)")
    parser.add_argument("--no-rate-limit", action="store_true", help="workers without the rate limiter")
    args = parser.parse_args()
    usage, events, posts = run(args)
    print(f"\nAWS cost per million events ({events} events: {events // 2} identify + {events // 2} transactions, "
          f"{args.post_size} per webhook request, {args.latency:g} s per Qualtrics call, "
          f"worker BatchSize {args.batch_size}, {args.concurrency} calls at once per batch, rate limiter "
          f"{'off' if args.no_rate_limit else 'on'}; prices {PRICES_DATE})\n")
    columns = ["API Gateway", "Lambda", "SQS", "DynamoDB", "Secrets Manager", "CloudWatch Logs"]
    print("| line (per million of its events) | " + " | ".join(columns)
          + " | total $ | GB-s | DynamoDB W/R | log bytes/event |")
    print("|---|" + "---:|" * (len(columns) + 4))
    totals: Counter[str] = Counter()
    for name, label in FUNCTIONS.items():
        use = usage.get(name, {})
        records = use.get("records") or 1
        dollars = cost(use)
        for k, v in dollars.items():
            totals[k] += v
        per_million = {k: v / records * 1e6 for k, v in dollars.items()}
        print(f"| {label} | " + " | ".join(f"{per_million[c]:.2f}" for c in columns)
              + f" | {sum(per_million.values()):.2f} | {use.get('gb_seconds', 0) / records * 1e6:,.0f} "
              f"| {use.get('dynamodb_writes', 0) / records:.2f}/{use.get('dynamodb_reads', 0) / records:.2f} "
              f"| {use.get('log_bytes', 0) / records:,.0f} |")
    per_event = {k: v / events * 1e6 for k, v in totals.items()}
    print("| **all, per million events received** | " + " | ".join(f"{per_event[c]:.2f}" for c in columns)
          + f" | **{sum(per_event.values()):.2f}** | | | |")


if __name__ == "__main__":
    main()
