"""A bad subscription never takes down the good ones, through the local stack.

Every function starts with a subscriptions file holding a good subscription and one whose mapping is broken:
the good one delivers; the broken one's events reach its queue and the worker dead-letters them as
subscription_invalid; once the file is fixed (new cold starts, as a deploy does) the DLQ tool's redrive
delivers them. A file that cannot be parsed at all: the ingest answers our JSON 503, a worker fails its
invocations and the messages stay queued.
"""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import Any

from segment_qualtrics.tools import cli

from local.stack import LocalStack
from tests.integration.conftest import Client

QUEUE, DLQ = "AddContactToXmdQueue", "AddContactToXmdDeadLetterQueue"
GOOD = {"name": "Contacts", "actionSlug": "addContactToXmd",
        "trigger": 'type = "identify" and traits.plan != "pro"',
        "mapping": {"directoryId": "${QUALTRICS_DIRECTORY_ID}"}}
FIXED = {"name": "Pro contacts", "actionSlug": "addContactToXmd",
         "trigger": 'type = "identify" and traits.plan = "pro"',
         "mapping": {"directoryId": "${QUALTRICS_DIRECTORY_ID}", "language": "FR"}}
BROKEN = {**FIXED, "mapping": {**FIXED["mapping"], "emial": {"@path": "$.traits.email"}}}   # a typo


def use_config(stack: LocalStack, path: Path, *functions: str) -> None:
    for function in functions or tuple(stack.functions):
        stack.configure(function, DESTINATION_CONFIG=str(path))


def identify(plan: str) -> dict[str, Any]:
    user = f"user-{uuid.uuid4().hex[:8]}"
    return {"type": "identify", "messageId": f"m-{uuid.uuid4()}", "userId": user,
            "traits": {"email": f"{user}@example.com", "plan": plan}, "timestamp": "2026-12-01T10:00:00.000Z"}


def contacts_of(client: Client, user: str) -> list[dict[str, Any]]:
    return [c for c in client.contacts() if c["extRef"] == user]


def json_lines(stack: LocalStack) -> list[dict[str, Any]]:
    found = []
    for line in stack.log_lines:
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return [f for f in found if isinstance(f, dict)]


def test_the_good_subscription_delivers_and_the_broken_ones_events_wait_in_the_dlq_for_the_fix(
        stack: LocalStack, client: Client, tmp_path: Path) -> None:
    config = tmp_path / "subscriptions.json"
    config.write_text(json.dumps({"subscriptions": [GOOD, BROKEN]}))
    use_config(stack, config)

    basic, pro = identify("basic"), identify("pro")
    for event in (basic, pro):
        answer = client.post(event)
        assert answer.status_code == 200, answer.text
    stack.drain()

    assert len(contacts_of(client, basic["userId"])) == 1          # the good one works
    assert contacts_of(client, pro["userId"]) == []                # nothing of the broken one reached Qualtrics
    [letter] = client.dead_letters(DLQ)
    assert (letter["errorCode"], letter["subscription"]) == ("subscription_invalid", "Pro contacts")
    assert letter["segmentMessageId"] == pro["messageId"]
    assert "unknown field 'emial'" in letter["errorMessage"]

    lines = json_lines(stack)
    switched_off = [line for line in lines if line.get("outcome") == "subscription_invalid"
                    and line.get("level") == "ERROR"]
    assert {line["function"] for line in switched_off} >= {"ingest", "addContactToXmd"}
    assert all("unknown field 'emial'" in line["message"] for line in switched_off)
    counts = {line["function"]: line["SubscriptionsInvalid"] for line in lines if "SubscriptionsInvalid" in line}
    assert counts["ingest"] == [1.0] and counts["addContactToXmd"] == [1.0]

    # The fix: the same name, the typo gone; new cold starts read it. Then the DLQ tool's redrive.
    config.write_text(json.dumps({"subscriptions": [GOOD, FIXED]}))
    use_config(stack, config)
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"awsEndpointUrl": stack.endpoint_url,
                                 "queues": {n: stack.queue_url(n) for n in stack.queue_depths()}}))
    out, err = io.StringIO(), io.StringIO()
    status = cli.main(["dlq", "redrive", "--code", "subscription_invalid", "--state", str(state)],
                          out=out, err=err, ask=lambda prompt: "y")
    assert status == 0, err.getvalue()
    stack.drain()
    [contact] = contacts_of(client, pro["userId"])
    assert contact["language"] == "FR"   # the fixed mapping
    assert client.dead_letters(DLQ) == []


def test_an_unparsable_file_gets_our_json_503_at_the_ingest_not_api_gateways_500(
        stack: LocalStack, client: Client, tmp_path: Path) -> None:
    config = tmp_path / "subscriptions.json"
    config.write_text('{"subscriptions": [')
    use_config(stack, config, "IngestFunction")
    for _ in range(2):
        answer = client.post(identify("basic"))
        assert answer.status_code == 503
        assert answer.headers["content-type"] == "application/json"
        assert answer.json()["error"]["code"] == "subscriptions_unusable"
        assert str(config) not in answer.text
    failures = [line for line in json_lines(stack) if line.get("outcome") == "startup_failed"]
    assert len(failures) == 1 and failures[0]["level"] == "ERROR"   # logged once, at the start
    assert "not valid JSON" in failures[0]["message"]


def test_a_worker_with_an_unparsable_file_fails_and_its_messages_stay_queued(
        stack: LocalStack, client: Client, tmp_path: Path) -> None:
    config = tmp_path / "subscriptions.json"
    config.write_text("not json")
    use_config(stack, config, "AddContactToXmdFunction")
    event = identify("basic")
    assert client.post(event).status_code == 200
    assert stack.deliver("AddContactToXmdFunction", window=False) == 1
    assert stack.queue_depths()[QUEUE] == 1 and stack.queue_depths()[DLQ] == 0
    assert contacts_of(client, event["userId"]) == []
    failures = [line for line in json_lines(stack) if line.get("outcome") == "startup_failed"]
    assert len(failures) == 1 and failures[0]["level"] == "ERROR" and "not valid JSON" in failures[0]["message"]
    assert failures[0]["function"] == "addContactToXmd"
