"""Hostile input through the local stack (HTTP → ingest → SQS on moto → worker → Qualtrics sandbox): each
limit of "Input the ingest refuses" (docs/error-model.md) answers as documented, never a 5xx, and what is
queued is delivered without a crashed worker batch."""

from __future__ import annotations

import json

import pytest
from segment_qualtrics.destination.envelope import sqs_entry_problem
from segment_qualtrics.segment.events import MAX_EVENT_DEPTH, MAX_EVENTS_PER_REQUEST, MAX_MESSAGE_ID_CHARS

IDENTIFY = '{"type":"identify","userId":"user-1","messageId":"m-1","traits":{"email":"ada@example.com"'


def _queued_bodies(stack) -> list[str]:
    """Every message on the addContactToXmd queue, read back (they become visible again at once)."""
    return [m["Body"] for m in stack.dead_letters("AddContactToXmdQueue")]


@pytest.mark.parametrize("depth", [MAX_EVENT_DEPTH + 1, 20_000])
def test_a_deep_body_is_400_too_deep(stack, client, depth):
    nested = "[" * depth + "]" * depth
    answer = client.post(body=f'{IDENTIFY},"deep":{nested}}}}}'.encode())
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "too_deep"
    assert not any(stack.queue_depths().values())


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_not_strict_json_is_400(stack, client, token):
    answer = client.post(body=f'{IDENTIFY},"score":{token}}}}}'.encode())
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "invalid_json"
    assert not any(stack.queue_depths().values())


def test_a_lone_surrogate_is_400_naming_the_field(stack, client):
    answer = client.post(body=f'{IDENTIFY},"firstName":"Ada\\ud800"}}}}'.encode())
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_characters" and error["message"].startswith("traits.firstName:")
    assert not any(stack.queue_depths().values())


@pytest.mark.parametrize("name", ["Ada\ufffe", "Ada\\ufffe", "Ada\\uffff"])
def test_a_non_character_is_queued_escaped_and_delivered(stack, client, name):
    answer = client.post(body=f'{IDENTIFY},"firstName":"{name}"}}}}'.encode())
    assert answer.status_code == 200, answer.text   # never the 503 SQS's refusal would cause
    [body] = _queued_bodies(stack)
    assert sqs_entry_problem(body, {}) is None and "\\uff" in body
    stack.drain()
    [contact] = client.contacts()
    assert contact["firstName"] == json.loads(f'"{name}"')
    assert client.dead_letters("AddContactToXmdDeadLetterQueue") == []


def test_a_message_id_sqs_cannot_carry_is_400(stack, client):
    for message_id in ("m\\u0001", "m\\ufffe", "m" * 3000):
        answer = client.post(body=f'{{"type":"identify","userId":"u","messageId":"{message_id}"}}'.encode())
        assert answer.status_code == 400, answer.text
        assert "messageId" in answer.json()["error"]["message"]
    assert not any(stack.queue_depths().values())


def test_the_longest_message_id_is_delivered_with_a_hashed_idempotency_key(stack, client):
    """1024 characters: action#subscription#id is over 1 KB, so the key is hashed (DynamoDB takes 2048 bytes)."""
    message_id = "m" * MAX_MESSAGE_ID_CHARS
    body = f'{{"type":"identify","userId":"user-1","messageId":"{message_id}","traits":{{"email":"a@b.c"}}}}'
    answer = client.post(body=body.encode())
    assert answer.status_code == 200, answer.text
    stack.drain()
    assert [c["extRef"] for c in client.contacts()] == ["user-1"]
    assert client.dead_letters("AddContactToXmdDeadLetterQueue") == []
    # The same event again: the hashed key finds the first delivery's record.
    assert client.post(body=body.encode()).status_code == 200
    stack.drain()
    assert len(client.qualtrics_requests("POST", "/contacts")) == 1


def test_more_events_than_the_cap_is_413(stack, client):
    body = "[" + ",".join(['{"type":"page","anonymousId":"a"}'] * (MAX_EVENTS_PER_REQUEST + 1)) + "]"
    answer = client.post(body=body.encode())
    assert answer.status_code == 413, answer.text
    error = answer.json()["error"]
    assert error["code"] == "too_many_events" and str(MAX_EVENTS_PER_REQUEST) in error["message"]
