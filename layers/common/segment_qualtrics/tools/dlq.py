"""Dead-letter queue tooling: list, redrive and purge the DLQs of the action queues.

Every function takes a boto3 SQS client (plain boto3, so AWS_ENDPOINT_URL or an explicit endpoint points it
at the local stack). The CLI is dlq_commands.py: ``segment-qualtrics dlq`` (``make dlq ARGS="list"``).

- list: peek at every message (received with a short hold, then made visible again), with the reason the
  worker wrote into its message attributes (errorCode, errorMessage, httpStatus, qualtricsRequestId).
- redrive: back to the action's own queue. Unfiltered, with SQS StartMessageMoveTask when the endpoint has
  it; otherwise (filters, or an endpoint without move tasks such as moto) message by message: send to the
  source queue first, delete from the DLQ only after the send succeeded. A failed delete leaves a copy in
  the DLQ, never a loss; the worker's idempotency key (action, subscription, Segment messageId) makes the
  second delivery a no-op.
- purge: PurgeQueue, or message by message when filtered.

A redriven message is mapped again by the worker (the queue keeps the raw event), so a mapping or a
subscription fixed after the failure applies.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from segment_qualtrics.adapters.aws_errors import explain
from segment_qualtrics.destination.actions import ACTIONS

# Attributes the worker adds when it dead-letters a message; dropped when the message goes back.
ERROR_ATTRIBUTES = frozenset({"errorCode", "errorMessage", "errorRetryable", "attempts", "httpStatus",
                              "qualtricsRequestId"})
HOLD_SECONDS = 300         # how long a scan keeps messages it has seen invisible
MAX_MESSAGES = 10_000      # a scan never reads more than this many messages
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class DlqError(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------------ queues

@dataclass(frozen=True)
class ActionQueues:
    action: str
    queue_url: str
    dead_letter_queue_url: str


def queues_from_outputs(outputs: dict[str, str], actions: Iterable[str] | None = None) -> dict[str, ActionQueues]:
    """From a stack's outputs: <Prefix>QueueUrl and <Prefix>DeadLetterQueueUrl."""
    return _pick_queues(outputs, actions, "{}QueueUrl", "{}DeadLetterQueueUrl", "the stack has no {} / {} output")


def _pick_queues(urls: dict[str, str], actions: Iterable[str] | None, queue_key: str, dlq_key: str,
                 missing: str) -> dict[str, ActionQueues]:
    found = {}
    for action in _chosen(actions):
        prefix = ACTIONS[action].prefix   # template logical ids: <prefix>Queue, <prefix>DeadLetterQueue
        queue_name, dlq_name = queue_key.format(prefix), dlq_key.format(prefix)
        if not urls.get(queue_name) or not urls.get(dlq_name):
            raise DlqError(missing.format(queue_name, dlq_name))
        found[action] = ActionQueues(action, urls[queue_name], urls[dlq_name])
    return found


def stack_outputs(cloudformation: Any, stack_name: str) -> dict[str, str]:
    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as exc:
        raise DlqError(explain(exc, stack=stack_name, region=cloudformation.meta.region_name)) from None
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}


def queues_from_state(state: dict[str, Any], actions: Iterable[str] | None = None) -> dict[str, ActionQueues]:
    """From the local stack's state file (.local-stack/state.json): queue URLs by logical id."""
    return _pick_queues(state.get("queues") or {}, actions, "{}Queue", "{}DeadLetterQueue",
                        "the local stack state has no {} / {}")


def read_state(path: str | Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DlqError(f"{path} not found: start the local stack (`make run`) or name a deployed stack "
                       "with --stack") from None
    except ValueError as exc:
        raise DlqError(f"{path} is not JSON: {exc}") from None


def _chosen(actions: Iterable[str] | None) -> list[str]:
    chosen = list(actions or ACTIONS)
    unknown = [a for a in chosen if a not in ACTIONS]
    if unknown:
        raise DlqError(f"unknown action(s) {', '.join(unknown)}; known: {', '.join(ACTIONS)}")
    return chosen


# ------------------------------------------------------------------------------------------------ messages

@dataclass
class DeadLetter:
    sqs_message_id: str
    receipt_handle: str
    body: str
    attributes: dict[str, str]                       # message attributes, string values
    raw_attributes: dict[str, dict[str, Any]]        # as SQS returned them (for the send back)
    sent_timestamp_ms: int | None
    receive_count: int

    @classmethod
    def from_sqs(cls, message: dict[str, Any]) -> DeadLetter:
        raw = message.get("MessageAttributes") or {}
        strings = {k: v.get("StringValue") for k, v in raw.items() if v.get("StringValue") is not None}
        system = message.get("Attributes") or {}
        sent = system.get("SentTimestamp")
        return cls(message["MessageId"], message["ReceiptHandle"], message.get("Body", ""), strings, raw,
                   int(sent) if sent else None, int(system.get("ApproximateReceiveCount") or 0))

    @property
    def envelope(self) -> dict[str, Any]:
        try:
            data = json.loads(self.body)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    @property
    def event(self) -> dict[str, Any]:
        event = self.envelope.get("event")
        return event if isinstance(event, dict) else {}

    @property
    def error_code(self) -> str:
        return self.attributes.get("errorCode") or "unknown"

    @property
    def segment_message_id(self) -> str | None:
        return self.attributes.get("segmentMessageId") or self.envelope.get("messageId")

    @property
    def key(self) -> str:
        """Identifies the message across a redrive (a re-dead-lettered copy has a new SQS id, the same body)."""
        return hashlib.sha256(self.body.encode()).hexdigest()

    def age_seconds(self, now: float | None = None) -> float | None:
        if self.sent_timestamp_ms is None:
            return None
        return max(0.0, (now if now is not None else time.time()) - self.sent_timestamp_ms / 1000)

    def describe(self, action: str, now: float | None = None) -> dict[str, Any]:
        status = self.attributes.get("httpStatus")
        age = self.age_seconds(now)
        return {
            "action": action,
            "sqsMessageId": self.sqs_message_id,
            "segmentMessageId": self.segment_message_id,
            "subscription": self.attributes.get("subscription") or self.envelope.get("subscription"),
            "eventType": self.attributes.get("eventType") or self.event.get("type"),
            "eventName": self.event.get("event"),
            "errorCode": self.error_code,
            "errorMessage": self.attributes.get("errorMessage"),
            "httpStatus": int(status) if status and status.isdigit() else status,
            "qualtricsRequestId": self.attributes.get("qualtricsRequestId"),
            "attempts": int(self.attributes["attempts"]) if self.attributes.get("attempts", "").isdigit() else None,
            "deadLetteredAt": _iso(self.sent_timestamp_ms),
            "ageSeconds": round(age) if age is not None else None,
        }

    def attributes_to_send(self) -> dict[str, dict[str, Any]]:
        kept = {}
        for name, value in self.raw_attributes.items():
            if name in ERROR_ATTRIBUTES:
                continue
            entry = {"DataType": value.get("DataType", "String")}
            for key in ("StringValue", "BinaryValue"):
                if value.get(key) is not None:
                    entry[key] = value[key]
            kept[name] = entry
        return kept


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_duration(text: str) -> float:
    """'90', '90s', '15m', '1h', '2d', '1w' -> seconds."""
    match = _DURATION.match(text or "")
    if not match:
        raise DlqError(f"{text!r} is not a duration: use 90s, 15m, 1h, 2d or 1w")
    return float(match.group(1)) * _UNITS[match.group(2).lower()]


@dataclass(frozen=True)
class Selection:
    """Which dead letters a command applies to. Empty = all of them."""

    codes: frozenset[str] = frozenset()
    older_than_seconds: float | None = None

    @property
    def everything(self) -> bool:
        return not self.codes and self.older_than_seconds is None

    def matches(self, letter: DeadLetter, now: float | None = None) -> bool:
        if self.codes and letter.error_code not in self.codes:
            return False
        if self.older_than_seconds is not None:
            age = letter.age_seconds(now)
            if age is None or age < self.older_than_seconds:
                return False
        return True


# ------------------------------------------------------------------------------------------------ scanning

def _scan(sqs: Any, url: str, *, hold_seconds: int = HOLD_SECONDS, limit: int = MAX_MESSAGES
          ) -> Iterator[DeadLetter]:
    """Receive every message once, each kept invisible for ``hold_seconds``. The caller releases or deletes."""
    seen: set[str] = set()
    wait = 0
    while len(seen) < limit:
        answer = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=hold_seconds,
                                     WaitTimeSeconds=wait, MessageAttributeNames=["All"],
                                     MessageSystemAttributeNames=["All"])
        messages = [m for m in answer.get("Messages", []) if m["MessageId"] not in seen]
        if not messages:
            # A short poll samples some SQS servers only and may come back empty while messages remain: unless
            # the queue says none is visible, ask once more with long polling (every server), then stop.
            if wait or answer.get("Messages") or queue_counts(sqs, url)["visible"] == 0:
                return
            wait = 1
            continue
        wait = 0
        for message in messages:
            seen.add(message["MessageId"])
            yield DeadLetter.from_sqs(message)


def _release(sqs: Any, url: str, letters: list[DeadLetter]) -> None:
    """Make held messages visible again at once."""
    for start in range(0, len(letters), 10):
        chunk = letters[start:start + 10]
        try:
            sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": 0} for i, m in enumerate(chunk)])
        except (ClientError, BotoCoreError):
            pass   # they come back by themselves when the hold runs out


def peek(sqs: Any, queues: ActionQueues, selection: Selection = Selection(), *, now: float | None = None,
         limit: int = MAX_MESSAGES) -> list[DeadLetter]:
    """The dead letters of one action that match ``selection``; every message stays in the DLQ."""
    held: list[DeadLetter] = []
    try:
        for letter in _scan(sqs, queues.dead_letter_queue_url, hold_seconds=120, limit=limit):
            held.append(letter)
    finally:
        _release(sqs, queues.dead_letter_queue_url, held)
    return [m for m in held if selection.matches(m, now)]


def queue_counts(sqs: Any, url: str) -> dict[str, int]:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return {"visible": int(attrs.get("ApproximateNumberOfMessages", 0)),
            "inFlight": int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0))}


# ------------------------------------------------------------------------------------------------ redrive

@dataclass
class RedriveResult:
    action: str
    method: str                    # "move-task", "message-by-message", or "nothing" (the DLQ was empty)
    moved: int = 0                 # for a move task: what SQS reports moved (or is moving, without waiting)
    skipped: int = 0               # not selected
    failed: int = 0                # send failed: still in the DLQ
    task_handle: str | None = None
    task_status: str | None = None
    notes: list[str] = field(default_factory=list)


def redrive(sqs: Any, queues: ActionQueues, selection: Selection = Selection(), *, use_move_task: bool = True,
            wait_seconds: float = 300.0, now: float | None = None, sleep: Callable[[float], None] = time.sleep,
            limit: int = MAX_MESSAGES) -> RedriveResult:
    notes: list[str] = []
    if not sum(queue_counts(sqs, queues.dead_letter_queue_url).values()):
        return RedriveResult(queues.action, "nothing")   # no move task, no scan, nothing to say
    if selection.everything and use_move_task:
        result = _move_task(sqs, queues, wait_seconds, sleep, notes)
        if result is not None:
            return result
    result = _redrive_one_by_one(sqs, queues, selection, now, limit)
    result.notes[:0] = notes
    return result


def _queue_arn(sqs: Any, url: str) -> str:
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def _move_task(sqs: Any, queues: ActionQueues, wait_seconds: float, sleep: Callable[[float], None],
               notes: list[str]) -> RedriveResult | None:
    """StartMessageMoveTask from the DLQ to the action queue; None when the endpoint cannot do it."""
    try:
        source, destination = _queue_arn(sqs, queues.dead_letter_queue_url), _queue_arn(sqs, queues.queue_url)
        running = [t for t in sqs.list_message_move_tasks(SourceArn=source, MaxResults=10).get("Results", [])
                   if t.get("Status") == "RUNNING"]
        if running:
            return RedriveResult(queues.action, "move-task", task_handle=running[0].get("TaskHandle"),
                                 task_status="RUNNING", notes=["a move task is already running; not starting another"])
        # The destination is explicit: messages the worker sent to the DLQ itself have no source queue of record.
        handle = sqs.start_message_move_task(SourceArn=source, DestinationArn=destination)["TaskHandle"]
    except (ClientError, BotoCoreError, NotImplementedError) as exc:
        notes.append(f"SQS move tasks unavailable here ({_reason(exc)}); moving message by message")
        return None
    result = RedriveResult(queues.action, "move-task", task_handle=handle, task_status="RUNNING")
    deadline = time.monotonic() + wait_seconds
    while wait_seconds > 0:
        try:
            tasks = sqs.list_message_move_tasks(SourceArn=source, MaxResults=10).get("Results", [])
        except (ClientError, BotoCoreError) as exc:
            result.notes.append(f"could not follow the move task: {_reason(exc)}")
            break
        task = next((t for t in tasks if t.get("TaskHandle") == handle), tasks[0] if tasks else {})
        result.task_status = task.get("Status", result.task_status)
        result.moved = int(task.get("ApproximateNumberOfMessagesMoved") or 0)
        if result.task_status != "RUNNING":
            if task.get("FailureReason"):
                result.notes.append(f"move task {result.task_status}: {task['FailureReason']}")
            break
        if time.monotonic() >= deadline:
            result.notes.append("still running; follow it with `list` or the SQS console")
            break
        sleep(2.0)
    return result


def _redrive_one_by_one(sqs: Any, queues: ActionQueues, selection: Selection, now: float | None,
                        limit: int) -> RedriveResult:
    result = RedriveResult(queues.action, "message-by-message")
    held: list[DeadLetter] = []
    moved_keys: set[str] = set()
    try:
        for letter in _scan(sqs, queues.dead_letter_queue_url, limit=limit):
            # A message redriven in this run that failed again at once is back with the same body: leave it.
            if not selection.matches(letter, now) or letter.key in moved_keys:
                result.skipped += 1
                held.append(letter)
                continue
            try:
                sqs.send_message(QueueUrl=queues.queue_url, MessageBody=letter.body,
                                 MessageAttributes=letter.attributes_to_send())
            except (ClientError, BotoCoreError) as exc:
                result.failed += 1
                result.notes.append(f"{letter.sqs_message_id}: not sent back ({_reason(exc)}); left in the DLQ")
                held.append(letter)
                continue
            moved_keys.add(letter.key)
            result.moved += 1
            try:
                sqs.delete_message(QueueUrl=queues.dead_letter_queue_url, ReceiptHandle=letter.receipt_handle)
            except (ClientError, BotoCoreError) as exc:
                result.notes.append(f"{letter.sqs_message_id}: sent back but not deleted from the DLQ "
                                    f"({_reason(exc)}); the copy is harmless (idempotent), delete it later")
    finally:
        _release(sqs, queues.dead_letter_queue_url, held)
    return result


# ------------------------------------------------------------------------------------------------ purge

@dataclass
class PurgeResult:
    action: str
    method: str          # "purge-queue" or "message-by-message"
    deleted: int = 0     # for purge-queue: the approximate count before the purge
    skipped: int = 0
    notes: list[str] = field(default_factory=list)


def purge(sqs: Any, queues: ActionQueues, selection: Selection = Selection(), *, per_message: bool = False,
          now: float | None = None, limit: int = MAX_MESSAGES) -> PurgeResult:
    """Everything: PurgeQueue (fast, but once a minute per queue; SQS finishes it within 60 s). Else, or when
    PurgeQueue is refused, message by message (exact counts)."""
    url = queues.dead_letter_queue_url
    notes = []
    if selection.everything and not per_message:
        counts = queue_counts(sqs, url)
        if not counts["visible"] + counts["inFlight"]:
            return PurgeResult(queues.action, "purge-queue")   # empty: no PurgeQueue (one a minute per queue)
        try:
            sqs.purge_queue(QueueUrl=url)
            return PurgeResult(queues.action, "purge-queue", deleted=counts["visible"] + counts["inFlight"])
        except ClientError as exc:
            # A purge from the last 60 s is still running: finish the job message by message, quietly.
            if exc.response.get("Error", {}).get("Code") not in ("PurgeQueueInProgress",
                                                                 "AWS.SimpleQueueService.PurgeQueueInProgress"):
                notes.append(f"PurgeQueue refused ({_reason(exc)}); deleting message by message")
    result = PurgeResult(queues.action, "message-by-message", notes=notes)
    held: list[DeadLetter] = []
    try:
        for letter in _scan(sqs, url, limit=limit):
            if not selection.matches(letter, now):
                result.skipped += 1
                held.append(letter)
                continue
            try:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=letter.receipt_handle)
                result.deleted += 1
            except (ClientError, BotoCoreError) as exc:
                result.notes.append(f"{letter.sqs_message_id}: not deleted ({_reason(exc)})")
                held.append(letter)
    finally:
        _release(sqs, url, held)
    return result


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "error")), str(error.get("Message") or "")
    else:
        code, message = type(exc).__name__, str(exc)
    if "<html" in message.lower():   # an endpoint's error page (moto answers 500 for what it lacks)
        message = ""
    message = " ".join(message.split())[:160]
    return f"{code}: {message}" if message else code
