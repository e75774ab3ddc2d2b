"""Ingest authentication through the local stack: a replayed batch, the AcceptBatchFirstElementSignature
parameter, and rotating the shared secret without refusing an event signed with either value."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from local.stack import LocalStack
from tests.integration.conftest import Client

RUN = uuid.uuid4().hex[:8]


def identify(name: str) -> dict[str, Any]:
    return {"type": "identify", "messageId": f"sig-{name}-{RUN}", "userId": f"{name}-{RUN}",
            "traits": {"email": f"{name}-{RUN}@example.com", "firstName": name}}


def replayed_batch(secret: str) -> tuple[bytes, str]:
    """A batch Webhooks (Actions) signed (HMAC of its first element) with an attacker's event appended."""
    first = json.dumps(identify("ada"), separators=(",", ":"))
    body = f"[{first},{json.dumps(identify('mallory'))}]".encode()
    return body, hmac.new(secret.encode(), first.encode(), hashlib.sha1).hexdigest()


def with_parameter(stack: LocalStack, function: str, name: str, value: str) -> None:
    """Restart ``function`` with its template environment resolved as if parameter ``name`` were ``value``."""
    variables = stack.resources[function]["Properties"]["Environment"]["Variables"]
    parameters = stack.intrinsics.parameters
    saved, parameters[name] = parameters[name], value
    try:
        changed = {k: str(stack.intrinsics.resolve(v)) for k, v in variables.items() if v == {"Ref": name}}
    finally:
        parameters[name] = saved
    assert changed, f"{function} has no variable set from {name}"
    stack.configure(function, **changed)


def emails(client: Client) -> set[str]:
    return {c.get("email") for c in client.contacts()}


def test_a_replayed_batch_with_an_injected_event_is_refused_by_default(stack: LocalStack, client: Client) -> None:
    body, signature = replayed_batch(stack.shared_secret)
    answer = client.post(body=body, headers={"X-Signature": signature}, sign=False)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "bad_signature"
    stack.drain()
    assert f"mallory-{RUN}@example.com" not in emails(client)
    assert sum(stack.queue_depths().values()) == 0


def test_the_replay_is_accepted_only_with_the_parameter_on(stack: LocalStack, client: Client) -> None:
    with_parameter(stack, "IngestFunction", "AcceptBatchFirstElementSignature", "true")
    body, signature = replayed_batch(stack.shared_secret)
    answer = client.post(body=body, headers={"X-Signature": signature}, sign=False)
    assert answer.status_code == 200, answer.text
    stack.drain()
    # What the parameter gives up: the appended event was queued and delivered like the signed one.
    assert {f"ada-{RUN}@example.com", f"mallory-{RUN}@example.com"} <= emails(client)


def test_a_batch_signed_over_its_whole_body_is_accepted_by_default(stack: LocalStack, client: Client) -> None:
    answer = client.post([identify("grace"), identify("alan")])
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 2


def put_ingest_secret(stack: LocalStack, value: dict[str, Any]) -> None:
    stack.client("secretsmanager").put_secret_value(SecretId=stack.intrinsics.physical["IngestSecret"],
                                                    SecretString=json.dumps(value))


def post_signed(client: Client, secret: str, name: str) -> int:
    body = json.dumps(identify(name)).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
    return client.post(body=body, headers={"X-Signature": signature}, sign=False).status_code


def test_rotating_the_shared_secret_accepts_both_values_during_the_grace_then_only_the_new(
        stack: LocalStack, client: Client) -> None:
    old, new = stack.shared_secret, f"rotated-secret-{RUN}"
    assert post_signed(client, old, "before") == 200   # the ingest is warm, with the old value cached
    until = datetime.now(UTC) + timedelta(hours=1)
    put_ingest_secret(stack, {"sharedSecret": new, "previousSharedSecret": old,
                              "previousValidUntil": until.isoformat()})
    # Segment switched to the new value: the cached secret fails it, the ingest re-reads the secret once.
    assert post_signed(client, new, "switched") == 200
    assert post_signed(client, old, "in-flight") == 200   # events Segment signed before the switch
    assert post_signed(client, "neither-value", "forged") == 401

    put_ingest_secret(stack, {"sharedSecret": new, "previousSharedSecret": old,
                              "previousValidUntil": (datetime.now(UTC) - timedelta(seconds=1)).isoformat()})
    stack.functions["IngestFunction"].stop()   # a new instance: no cached secret
    assert post_signed(client, old, "late") == 401
    assert post_signed(client, new, "after") == 200


def ingest_errors(stack: LocalStack) -> list[dict[str, Any]]:
    records = []
    for line in stack.log_lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("level") == "ERROR":
            records.append(record)
    return records


def test_a_secret_that_is_not_a_json_object_is_our_500_auth_not_configured(stack: LocalStack, client: Client) -> None:
    pasted = f"bare-shared-secret-{RUN}"   # the operator pasted the shared secret itself, not {"sharedSecret": ...}
    stack.client("secretsmanager").put_secret_value(SecretId=stack.intrinsics.physical["IngestSecret"],
                                                    SecretString=pasted)
    stack.functions["IngestFunction"].stop()   # no cached secret
    answer = client.post(identify("pasted"))
    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "auth_not_configured"
    assert "JSON object" in answer.json()["error"]["message"] and pasted not in answer.text
    errors = ingest_errors(stack)
    assert [e["code"] for e in errors] == ["auth_not_configured"] and "not a JSON object" in errors[0]["cause"]
    assert not any(pasted in line for line in stack.log_lines)


def test_a_secret_that_cannot_be_read_is_a_503_secret_unavailable(stack: LocalStack, client: Client) -> None:
    missing = stack.intrinsics.physical["IngestSecret"] + "-missing"
    stack.configure("IngestFunction", INGEST_SECRET_ARN=missing)
    answer = client.post(identify("unreadable"))
    assert answer.status_code == 503   # Segment retries 5xx: the events come again once the secret is back
    assert answer.json()["error"]["code"] == "secret_unavailable"
    errors = ingest_errors(stack)
    assert [e["code"] for e in errors] == ["secret_unavailable"]
    assert "ResourceNotFoundException" in errors[0]["cause"]
