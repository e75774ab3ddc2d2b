"""`make demo`: send the sample Segment events to the running local stack, then show what landed.

It signs each body as Segment does (X-Signature = hex HMAC-SHA1 with the stack's shared secret),
waits for the workers, and prints the sandbox's contacts, transactions and workflow runs, and the
content of every dead-letter queue with its reasons.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import time
from pathlib import Path

import boto3
import requests

from local.stack import QUEUED_MESSAGES, REGION, STATE_FILE

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ["identify.json", "track_transaction_created.json", "batch.json", "batch_with_invalid_event.json",
           "invalid_event.json", "bad_signature.json"]
# Sent once the others are delivered: a Segment retry of identify.json's messageId, which the worker skips.
DUPLICATE = "duplicate_of_identify.json"
# Sent last: Segment's delete call for the samples' user; deleteContact removes the contact (and, in the sandbox as in
# Qualtrics, its transactions).
DELETE = "delete.json"


def main() -> int:
    if not STATE_FILE.exists():
        print("The local stack is not running: start it with `make run` in another terminal.", file=sys.stderr)
        return 1
    state = json.loads(STATE_FILE.read_text())
    secret = state["sharedSecret"].encode()
    sqs = boto3.client("sqs", endpoint_url=state["awsEndpointUrl"], region_name=REGION,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    sources = {n: u for n, u in state["queues"].items() if not n.endswith("DeadLetterQueue")}
    for batch in (SAMPLES, [DUPLICATE]):
        if batch == [DUPLICATE]:
            print("\nnow a Segment retry: identify.json's messageId again (the worker logs `duplicate`)")
        for name in batch:
            if not _post(state, secret, name):
                return 1
        print("\nwaiting for the workers…")
        if not _wait(sqs, sources):
            print("(some messages are still being retried; run `make demo` again later to see them land)")

    if state.get("sandboxUrl"):
        sandbox = requests.get(state["sandboxUrl"] + "/_sandbox/state", timeout=5).json()
        for directory_id, directory in sandbox["directories"].items():
            print(f"\nQualtrics sandbox, directory {directory_id}: {len(directory['contacts'])} contact(s)")
            for c in directory["contacts"]:
                print(f"  {c['contactId']}  extRef={c.get('extRef')} email={c.get('email')} "
                      f"name={c.get('firstName')} {c.get('lastName')}")
            print(f"  {len(directory['transactions'])} transaction(s)")
            for t in directory["transactions"]:
                print(f"  {t.get('transactionId')}  contact={t.get('contactId')} date={t.get('transactionDate')} "
                      f"data={json.dumps(t.get('data'))}")
        print(f"\nworkflow runs: {len(sandbox['workflowRuns'])}")
        for run in sandbox["workflowRuns"]:
            print(f"  urlTokenId={run.get('urlTokenId')} body keys={sorted((run.get('body') or {}).keys())}")

        _delete_demo(state, secret, sqs, sources)

    print()
    for name, url in state["queues"].items():
        if not name.endswith("DeadLetterQueue"):
            continue
        messages = _peek(sqs, url)
        print(f"{name}: {len(messages)} message(s)")
        for m in messages:
            attrs = {k: v.get("StringValue") for k, v in m.get("MessageAttributes", {}).items()}
            print(f"  messageId={attrs.get('segmentMessageId')} {attrs.get('errorCode')} "
                  f"(status {attrs.get('httpStatus', '-')}): {attrs.get('errorMessage')}")
    return 0


def _delete_demo(state: dict, secret: bytes, sqs, sources: dict[str, str]) -> None:
    """deleteContact: the samples' user asks to be forgotten; show their contacts before and after."""
    user = json.loads(json.loads((ROOT / "events" / "ingest" / DELETE).read_text())["body"])["userId"]
    print(f"\nnow Segment's delete call for {user} (deleteContact, the right to be forgotten)")
    before = _contacts_of(state, user)
    if not _post(state, secret, DELETE):
        return
    if not _wait(sqs, sources):
        print("(the deletion is still being retried; run `make demo` again later)")
    print(f"  contacts with extRef {user}: {before} before, {_contacts_of(state, user)} after")


def _contacts_of(state: dict, user: str) -> int:
    sandbox = requests.get(state["sandboxUrl"] + "/_sandbox/state", timeout=5).json()
    return sum(c.get("extRef") == user for d in sandbox["directories"].values() for c in d["contacts"])


def _post(state: dict, secret: bytes, name: str) -> bool:
    event = json.loads((ROOT / "events" / "ingest" / name).read_text())
    body = event["body"].encode()
    signature = event["headers"]["x-signature"]
    if name != "bad_signature.json":
        signature = hmac.new(secret, body, hashlib.sha1).hexdigest()
    try:
        answer = requests.post(state["url"], data=body, timeout=15,
                               headers={"Content-Type": "application/json", "X-Signature": signature})
    except requests.ConnectionError:
        print(f"cannot reach {state['url']}: is `make run` still running?", file=sys.stderr)
        return False
    print(f"POST {name:<34} → {answer.status_code} {answer.text}")
    return True


def _wait(sqs, sources: dict[str, str], seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(1)
        if all(_depth(sqs, url) == 0 for url in sources.values()):
            return True
    return False


def _depth(sqs, url: str) -> int:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[*QUEUED_MESSAGES])["Attributes"]
    return sum(int(attrs[a]) for a in QUEUED_MESSAGES)


def _peek(sqs, url: str) -> list[dict]:
    answer = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0,
                                 MessageAttributeNames=["All"])
    return answer.get("Messages", [])


if __name__ == "__main__":
    sys.exit(main())
