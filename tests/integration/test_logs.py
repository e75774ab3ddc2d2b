"""What the functions write to their logs, over a full run of the local stack.

One run (module fixture, on conftest's session stack): an identify (throttled once), a transaction (two actions), a
Qualtrics 400 whose error message quotes an email and a phone number, a batch with an invalid event and a
badly signed request, with POWERTOOLS_LOGGER_LOG_EVENT on (every raw event is logged: headers, bodies) and
the Qualtrics startup check forced on. No secret, signature, email or phone number may reach a line; every
line of a message's work carries its Segment messageId as correlation id, its action and its subscription;
every EMF metric is one observability.METRICS declares, under its declared dimensions.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import time
import uuid
from typing import Any

import pytest
import requests
from aws_lambda_powertools import Logger
from segment_qualtrics.runtime.observability import METRICS, NAMESPACE, Metric, RedactingFormatter, mask, redact

from local.stack import SANDBOX_TOKEN, LocalStack

EMAIL = "grace.logtest@example.com"
PHONE = "+1 415 555 0142"
RUN = uuid.uuid4().hex[:8]
IDENTIFY_ID, TRANSACTION_ID, FAILING_ID = f"log-identify-{RUN}", f"log-transaction-{RUN}", f"log-failing-{RUN}"
INVALID_ID = f"log-invalid-{RUN}"
WORK_OUTCOMES = {"queued", "delivered", "duplicate", "retried", "dead_lettered", "dead_letter_failed"}


def signed_post(stack: LocalStack, payload: Any, signatures: list[str], secret: str | None = None) -> int:
    body = json.dumps(payload).encode()
    signature = hmac.new((secret or stack.shared_secret).encode(), body, hashlib.sha1).hexdigest()
    signatures.append(signature)
    answer = requests.post(stack.url, data=body, timeout=15,
                           headers={"Content-Type": "application/json", "X-Signature": signature})
    return answer.status_code


def settled(lines: list[str]) -> list[str]:
    """The log lines once the stack's reader threads have passed on the last ones (they trail the processes)."""
    seen, deadline = -1, time.monotonic() + 5
    while len(lines) != seen and time.monotonic() < deadline:
        seen = len(lines)
        time.sleep(0.2)
    return list(lines)


@pytest.fixture(scope="module")
def run(running_stack: LocalStack) -> dict[str, Any]:
    """The whole run, once, on conftest's session stack (reset before and after)."""
    stack = running_stack
    stack.reset()
    for function in stack.functions:
        stack.configure(function, POWERTOOLS_LOGGER_LOG_EVENT="true", QUALTRICS_STARTUP_CHECK="true")
    signatures: list[str] = []
    try:
        # The identify is throttled once (429), then delivered on its second attempt.
        requests.post(f"{stack.sandbox.base_url}/_sandbox/faults", timeout=5, json={
            "pathPattern": "/contacts$", "status": 429, "times": 1, "retryAfter": 0}).raise_for_status()
        traits = {"email": EMAIL, "phone": PHONE, "firstName": "Grace", "lastName": "Hopper"}
        statuses = [signed_post(stack, {"type": "identify", "messageId": IDENTIFY_ID, "userId": f"grace-{RUN}",
                                        "traits": traits}, signatures)]
        statuses.append(signed_post(stack, {
            "type": "track", "event": "Transaction Created", "messageId": TRANSACTION_ID, "userId": f"grace-{RUN}",
            "properties": {"orderId": "ord-1", "total": 12.5}, "context": {"traits": {"email": EMAIL}}}, signatures))
        stack.drain()
        # Qualtrics refuses the next contact, quoting the values in its message.
        requests.post(f"{stack.sandbox.base_url}/_sandbox/faults", timeout=5, json={
            "pathPattern": "/contacts$", "status": 400, "times": 1,
            "body": {"meta": {"httpStatus": "400 - Bad Request", "requestId": "req-log-test",
                              "error": {"errorMessage": f"invalid contact {EMAIL} / {PHONE}",
                                        "errorCode": "QVAL_1"}}}}).raise_for_status()
        statuses.append(signed_post(stack, {"type": "identify", "messageId": FAILING_ID, "userId": f"ada-{RUN}",
                                            "traits": {"email": EMAIL, "phone": PHONE}}, signatures))
        statuses.append(signed_post(stack, [{"type": "identify", "messageId": f"log-batch-{RUN}",
                                             "userId": f"ada-{RUN}", "traits": {"email": EMAIL}},
                                            {"type": "nonsense", "messageId": INVALID_ID, "traits": {"email": EMAIL}}],
                                    signatures))
        statuses.append(signed_post(stack, {"type": "identify", "messageId": f"log-unsigned-{RUN}",
                                            "userId": "x"}, signatures, secret="not-the-secret"))
        stack.drain()
        dead = stack.dead_letters("AddContactToXmdDeadLetterQueue")
        for function in stack.functions.values():
            function.stop()   # ends each process: its stderr (the log stream) is then complete
        lines = settled(stack.log_lines)
    finally:
        stack.reset()   # back to the functions' own environment for the next tests
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            records.append(None)
    return {"lines": lines, "records": records, "signatures": signatures, "statuses": statuses,
            "secret": stack.shared_secret, "dead": dead}


def log_records(run: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in run["records"] if isinstance(r, dict) and "_aws" not in r]


def emf_blobs(run: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in run["records"] if isinstance(r, dict) and "_aws" in r]


def test_the_run_went_as_planned(run: dict[str, Any]) -> None:
    assert run["statuses"] == [200, 200, 200, 200, 401]
    assert [m["MessageAttributes"]["segmentMessageId"]["StringValue"] for m in run["dead"]] == [FAILING_ID]
    assert all(r is not None for r in run["records"]), "every line the functions write is JSON"
    outcomes = {(r.get("outcome"), r.get("segmentMessageId")) for r in log_records(run)}
    assert {("retried", IDENTIFY_ID), ("delivered", IDENTIFY_ID), ("delivered", TRANSACTION_ID),
            ("dead_lettered", FAILING_ID), ("rejected", INVALID_ID)} <= outcomes


def test_no_secret_signature_email_or_phone_reaches_the_logs(run: dict[str, Any]) -> None:
    text = "\n".join(run["lines"])
    assert SANDBOX_TOKEN not in text
    assert run["secret"] not in text
    for signature in run["signatures"]:
        assert signature not in text
    assert EMAIL not in text and "grace.logtest" not in text
    assert PHONE not in text and "555 0142" not in text
    # Not merely absent: the raw events were logged (log_event), with the values masked.
    assert "g***@example.com" in text
    assert any(isinstance(r.get("message"), dict) and r["message"].get("headers", {}).get("x-signature")
               == "[REDACTED]" for r in log_records(run))


def test_lines_of_a_message_carry_its_correlation_id_action_and_subscription(run: dict[str, Any]) -> None:
    work = [r for r in log_records(run) if r.get("outcome") in WORK_OUTCOMES]
    assert len(work) >= 9   # 4 queued + 5 outcomes, at least
    for record in work:
        assert record["correlation_id"] == record["segmentMessageId"], record
        assert record.get("action") and record.get("subscription"), record
    by_message: dict[str, set[str]] = {}
    for record in work:
        by_message.setdefault(record["correlation_id"], set()).add(record["function_name"])
    assert by_message[TRANSACTION_ID] == {"IngestFunction", "UpsertContactTransactionFunction",
                                          "TriggerXflowWorkflowFunction"}
    # Every line a worker writes names its action, even those that are about no message.
    for record in log_records(run):
        if record.get("function_name", "").endswith("Function") and record["function_name"] != "IngestFunction":
            assert record.get("action"), record


def test_a_failure_line_names_the_reason_and_the_qualtrics_request(run: dict[str, Any]) -> None:
    [line] = [r for r in log_records(run) if r.get("outcome") == "dead_lettered"]
    assert (line["errorCode"], line["httpStatus"], line["qualtricsRequestId"]) == ("qualtrics_rejected", 400,
                                                                                  "req-log-test")
    assert line["errorMessage"] == "Qualtrics answered 400: invalid contact g***@example.com / *** (QVAL_1)"
    [rejected] = [r for r in log_records(run) if r.get("outcome") == "rejected" and r.get("status") == 401]
    assert rejected["code"] == "bad_signature"


def test_the_startup_check_runs_once_per_worker(run: dict[str, Any]) -> None:
    checks = [r for r in log_records(run) if r.get("check") == "whoami"]
    assert sorted(r["function_name"] for r in checks) == sorted(
        {r["function_name"] for r in log_records(run) if r.get("outcome") in ("delivered", "dead_lettered")})
    for check in checks:
        assert check["level"] == "INFO" and check["message"] == "Qualtrics startup check passed", check


def test_every_metric_is_declared_with_its_dimensions(run: dict[str, Any]) -> None:
    emitted: dict[str, set[frozenset[str]]] = {}
    for blob in emf_blobs(run):
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            assert directive["Namespace"] == NAMESPACE
            [dimensions] = directive["Dimensions"]
            for metric in directive["Metrics"]:
                emitted.setdefault(metric["Name"], set()).add(frozenset(dimensions))
                assert metric["Unit"] == METRICS[Metric(metric["Name"])].unit.value, metric
    for name, dimension_sets in emitted.items():
        assert dimension_sets == {METRICS[Metric(name)].dimensions}, name
    assert {"EventsReceived", "MessagesQueued", "MessagesDelivered", "MessagesDeadLettered", "DeadLettersByCode",
            "QualtricsCalls", "QualtricsLatency", "QualtricsErrors", "ContactLookups", "ColdStart",
            "RequestsRejected", "EventsRejected", "BatchSize"} <= set(emitted)
    assert [b["reason"] for b in emf_blobs(run) if "RetriesByReason" in b] == ["429"]
    queued = {b["action"]: b["MessagesQueued"] for b in emf_blobs(run) if "MessagesQueued" in b}
    assert set(queued) == {"addContactToXmd", "upsertContactTransaction", "triggerXflowWorkflow"}


# ------------------------------------------------------------------------------------------------ the formatter

def test_the_formatter_redacts_keys_secrets_emails_and_phones() -> None:
    stream = io.StringIO()
    log = Logger(service=f"redaction-test-{RUN}", logger_formatter=RedactingFormatter(),
                 logger_handler=logging.StreamHandler(stream))
    redact("s3cr3t-value-123", "short")
    log.info({"headers": {"Authorization": "Bearer abc", "X-Signature": "deadbeef"}, "apiToken": "tok"},
             extra={"note": f"key s3cr3t-value-123 for {EMAIL} or {PHONE}", "segmentMessageId": "1234567890123",
                    "short": "short"})
    line = json.loads(stream.getvalue())
    assert line["message"] == {"headers": {"Authorization": "[REDACTED]", "X-Signature": "[REDACTED]"},
                               "apiToken": "[REDACTED]"}
    assert line["note"] == "key [REDACTED] for g***@example.com or ***"
    assert line["segmentMessageId"] == "1234567890123"   # ids are not phone numbers
    assert line["short"] == "short"                      # too short to register as a secret
    assert mask(f"call {PHONE}, mail {EMAIL}") == "call ***, mail g***@example.com"
