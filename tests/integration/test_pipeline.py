"""The whole path: signed POST → ingest → SQS → addContactToXmd worker → Qualtrics sandbox contact."""

from __future__ import annotations

import json
import time

import pytest
from segment_qualtrics.ingest.core import MAX_BODY_BYTES


def identify(n: int = 1, **extra) -> dict:
    return {"type": "identify", "messageId": f"msg-identify-{n}", "userId": f"user-{n}", "anonymousId": None,
            "traits": {"email": f"person{n}@example.com", "firstName": f"First{n}", "lastName": "Example",
                       "phone": 5550100 + n},
            "integrations": {}, "timestamp": "2026-11-29T10:00:00.123+00:00", **extra}


def test_signed_identify_becomes_a_contact(stack, client):
    answer = client.post(identify(1))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"accepted": 1, "invalid": [], "queued": {"addContactToXmd": 1}}

    stack.drain()

    contacts = client.contacts()
    assert len(contacts) == 1
    contact = contacts[0]
    assert (contact["extRef"], contact["email"], contact["firstName"], contact["language"]) == (
        "user-1", "person1@example.com", "First1", "EN")
    assert contact["phone"] == "5550101"   # a number mapped into a string field is coerced, as Segment does
    [call] = client.qualtrics_requests("POST", "/contacts")
    assert call["path"] == "/API/v3/directories/POOL_SANDBOX/contacts"
    assert call["headers"]["X-API-TOKEN"] == "***"   # sent (the sandbox masks it in its log)
    assert client.dead_letters("AddContactToXmdDeadLetterQueue") == []


def test_bad_signature_is_401_and_nothing_is_queued(stack, client):
    answer = client.post(identify(1), headers={"X-Signature": "0" * 40})
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "bad_signature"
    unsigned = client.post(identify(1), sign=False)
    assert unsigned.status_code == 401
    assert "X-Signature" in unsigned.json()["error"]["message"]
    assert not any(stack.queue_depths().values())


def test_malformed_json_wrong_type_and_too_large(stack, client):
    broken = client.post(body=b'{"type": "identify", ')
    assert broken.status_code == 400
    assert broken.json()["error"]["code"] == "invalid_json"

    text = client.post(body=b"hello", headers={"Content-Type": "text/plain"})
    assert text.status_code == 415
    assert "application/json" in text.json()["error"]["message"]

    huge = client.post(body=b"[" + b" " * (MAX_BODY_BYTES + 1) + b"]")
    assert huge.status_code == 413
    assert huge.json()["error"]["code"] == "payload_too_large"

    scalar = client.post(body=b"42")
    assert scalar.status_code == 400
    assert scalar.json()["error"]["code"] == "invalid_body"
    assert not any(stack.queue_depths().values())


def test_single_invalid_event_is_400_with_the_reason(stack, client):
    answer = client.post({"type": "purchase", "userId": "u"})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_event"
    assert "purchase" in answer.json()["error"]["message"]


def test_batch_with_one_invalid_event_delivers_the_others(stack, client):
    batch = [identify(1), {"type": "track", "userId": "u2", "messageId": "bad-1"}, identify(3)]
    answer = client.post(batch)
    assert answer.status_code == 200
    body = answer.json()
    assert body["accepted"] == 2
    assert body["invalid"] == [{"index": 1, "messageId": "bad-1", "error": 'a track event needs an "event" name'}]

    stack.drain()
    assert sorted(c["extRef"] for c in client.contacts()) == ["user-1", "user-3"]


def test_tracking_api_batch_shape_and_all_invalid_batch(stack, client):
    ok = client.post({"batch": [identify(1), identify(2)]})
    assert ok.status_code == 200 and ok.json()["accepted"] == 2

    bad = client.post([{"type": "identify"}, {"type": "nope", "userId": "x"}])
    assert bad.status_code == 400
    error = bad.json()["error"]
    assert error["code"] == "invalid_batch"
    assert [e["index"] for e in error["invalid"]] == [0, 1]


def test_events_that_trigger_nothing_are_acknowledged(stack, client):
    page = {"type": "page", "anonymousId": "a-1", "name": "Home", "timestamp": "2026-11-29T10:00:00Z"}
    # (a `delete` triggers deleteContact, which the local stack's subscriptions enable)
    group = {"type": "group", "userId": "u-9", "groupId": "g-1", "timestamp": "2026-11-29T10:00:00Z"}
    answer = client.post([page, group])
    assert answer.status_code == 200
    assert answer.json() == {"accepted": 2, "invalid": [], "queued": {}}


def test_bearer_token_alternative(stack, client):
    secrets = stack.client("secretsmanager")
    secrets.put_secret_value(SecretId="IngestSecret",
                             SecretString=json.dumps({"sharedSecret": stack.shared_secret, "bearerToken": "tok-123"}))
    good = client.post(identify(1), sign=False, headers={"Authorization": "Bearer tok-123"})
    assert good.status_code == 200, good.text
    wrong = client.post(identify(1), sign=False, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "bad_token"


def test_qualtrics_400_goes_to_the_dlq_at_once_with_its_reason(stack, client):
    client.fault(pathPattern="/contacts$", status=400, times=1)
    client.post(identify(1))
    stack.drain()

    assert client.contacts() == []
    assert len(client.qualtrics_requests("POST", "/contacts")) == 1   # no retry of a permanent error
    [dead] = client.dead_letters("AddContactToXmdDeadLetterQueue")
    assert dead["errorCode"] == "qualtrics_rejected"
    assert dead["httpStatus"] == "400"
    assert dead["qualtricsRequestId"]
    assert dead["segmentMessageId"] == "msg-identify-1"
    assert dead["attempts"] == "1"
    assert json.loads(dead["body"])["event"]["userId"] == "user-1"   # the raw event, ready for a redrive


def test_qualtrics_500_then_success_delivers_once(stack, client):
    client.fault(pathPattern="/contacts$", status=500, times=1)
    client.post(identify(1))
    stack.drain()

    assert len(client.contacts()) == 1
    statuses = [r["status"] for r in client.qualtrics_requests("POST", "/contacts")]
    assert statuses == [500, 200]
    assert client.dead_letters("AddContactToXmdDeadLetterQueue") == []


def test_429_with_retry_after_is_delayed_then_delivered(stack, client):
    client.fault(pathPattern="/contacts$", status=429, times=1, retryAfter=2)
    client.post(identify(1))
    started = time.monotonic()
    stack.pump()   # first attempt: 429
    assert client.contacts() == []
    assert stack.pump() == 0   # hidden for Retry-After seconds, not redelivered at once
    stack.drain()
    assert time.monotonic() - started >= 1.5
    assert len(client.contacts()) == 1
    assert [r["status"] for r in client.qualtrics_requests("POST", "/contacts")] == [429, 200]
    assert any('"outcome":"retried"' in line.replace(" ", "") for line in stack.log_lines)


def test_transient_errors_on_every_attempt_end_in_the_dlq_with_the_reason(stack, client):
    client.fault(pathPattern="/contacts$", status=503, times=50)
    client.post(identify(1))
    stack.drain(timeout=90)
    [dead] = client.dead_letters("AddContactToXmdDeadLetterQueue")
    assert dead["errorCode"] == "qualtrics_server_error"
    assert dead["errorRetryable"] == "true"
    assert "gave up after 5 attempts" in dead["errorMessage"]
    assert len(client.qualtrics_requests("POST", "/contacts")) == 5


def test_sqs_partial_failure_is_503_then_the_retry_delivers_each_event_once(stack, client):
    batch = [identify(1), identify(2), identify(3)]
    stack.sqs_faults.fail_batches = 3   # every publish attempt loses its last entry
    first = client.post(batch)
    assert first.status_code == 503, first.text
    assert first.json()["error"]["code"] == "queue_unavailable"
    assert first.json()["error"]["messageIds"] == ["msg-identify-3"]

    second = client.post(batch)   # Segment retries the whole request after a 5xx
    assert second.status_code == 200

    stack.drain()
    assert sorted(c["extRef"] for c in client.contacts()) == ["user-1", "user-2", "user-3"]
    # identify 1 and 2 were queued twice; the second copies are recognised and not sent again.
    assert len(client.qualtrics_requests("POST", "/contacts")) == 3


def test_the_same_event_posted_twice_calls_qualtrics_once(stack, client):
    client.post(identify(7))
    client.post(identify(7))
    stack.drain()
    assert len(client.qualtrics_requests("POST", "/contacts")) == 1
    assert any('"outcome":"duplicate"' in line.replace(" ", "") for line in stack.log_lines)


@pytest.mark.parametrize("path", ["/other", "/segment/extra"])
def test_unknown_routes_are_404_like_api_gateway(stack, client, path):
    import requests

    answer = requests.post(stack.url.replace("/segment", path), data=b"{}", timeout=5)
    assert answer.status_code == 404


def test_a_delayed_message_counts_as_queued_so_a_drain_waits_for_it(stack):
    # A rate-limited message comes back as a fresh copy with DelaySeconds; a drain that counted only visible and
    # in-flight messages returned before it was delivered (a dead-letter queue then read as empty).
    stack.client("sqs").send_message(QueueUrl=stack.queue_url("AddContactToXmdQueue"), MessageBody="{}",
                                     DelaySeconds=60)
    assert stack.queue_depths()["AddContactToXmdQueue"] == 1
