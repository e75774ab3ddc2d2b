"""Dead-letter queues from the command line: ``segment-qualtrics dlq <list|redrive|purge>`` (tools/cli.py).

Queues come from a deployed stack's outputs (``--stack NAME [--region R]``) or, without --stack, from the
local stack's state file (.local-stack/state.json, written while ``make run`` runs).

    list     [--json] [--code C]... [--older-than 1h]      every dead letter with its reason and age
    redrive  [--code C]... [--older-than 1h] [--no-move-task] [--no-wait]
                                                           back to the action queue (fix the cause first)
    purge    [--code C]... [--older-than 1h] [--yes]       delete them, after a confirmation

``--action SLUG`` (repeatable) limits any command to some actions. Exit status: 0 done, 1 error.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from segment_qualtrics.adapters.aws_errors import explain, pick_region
from segment_qualtrics.destination.actions import ACTIONS
from segment_qualtrics.tools.dlq import (
    ActionQueues,
    DeadLetter,
    DlqError,
    Selection,
    parse_duration,
    peek,
    purge,
    queue_counts,
    queues_from_outputs,
    queues_from_state,
    read_state,
    redrive,
    stack_outputs,
)

DEFAULT_STATE = Path(".local-stack") / "state.json"
LOCAL_REGION = "us-east-1"
CLIENT_CONFIG = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30)


@dataclass
class Target:
    """Where the queues are: a deployed stack or the local stack."""

    description: str
    client: Callable[[str], Any]
    outputs: dict[str, str] | None = None
    state: dict[str, Any] | None = None
    move_tasks: bool = True   # the local stack's moto has no SQS move tasks (and logs a traceback when asked)

    def queues(self, actions: list[str] | None) -> dict[str, ActionQueues]:
        if self.outputs is not None:
            return queues_from_outputs(self.outputs, actions)
        return queues_from_state(self.state or {}, actions)


def resolve_target(stack: str | None, region: str | None, state_path: str | Path | None) -> Target:
    if stack:
        session = boto3.session.Session(region_name=pick_region(region))
        outputs = stack_outputs(session.client("cloudformation", config=CLIENT_CONFIG), stack)
        where = session.region_name or "the default region"
        return Target(f"stack {stack} ({where})", lambda service: session.client(service, config=CLIENT_CONFIG),
                      outputs=outputs)
    state = read_state(state_path or DEFAULT_STATE)
    endpoint = state.get("awsEndpointUrl")
    if not endpoint:
        raise DlqError("the local stack state has no awsEndpointUrl")

    def client(service: str) -> Any:
        # The local stack's moto endpoint accepts any credentials; never send real ones to it.
        return boto3.client(service, endpoint_url=endpoint, region_name=LOCAL_REGION, aws_access_key_id="testing",
                            aws_secret_access_key="testing", config=CLIENT_CONFIG)

    return Target(f"the local stack ({endpoint})", client, state=state, move_tasks=False)


# ------------------------------------------------------------------------------------------------ arguments

def _target_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    default = (lambda value: argparse.SUPPRESS) if suppress else (lambda value: value)
    parser.add_argument("--stack", default=default(None),
                        help="deployed stack name (its outputs name the queues); default: the local stack")
    parser.add_argument("--region", default=default(None), help="AWS region of --stack (default: AWS config)")
    parser.add_argument("--state", default=default(str(DEFAULT_STATE)),
                        help=f"local stack state file (default: {DEFAULT_STATE})")
    parser.add_argument("--action", action="append", choices=list(ACTIONS), default=default(None),
                        help="only this action's dead-letter queue (repeatable; default: all)")


def _selection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--code", action="append", default=[], metavar="ERROR_CODE",
                        help="only messages with this errorCode attribute (repeatable)")
    parser.add_argument("--older-than", metavar="DURATION",
                        help="only messages dead-lettered longer ago than this (90s, 15m, 1h, 2d, 1w)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "List, redrive or purge the action dead-letter queues."
    _target_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="dlq_command", required=True, metavar="{list,redrive,purge}")

    listing = commands.add_parser("list", help="show every dead letter with its reason")
    _target_options(listing, suppress=True)
    _selection_options(listing)
    listing.add_argument("--json", action="store_true", help="one JSON array on stdout")

    back = commands.add_parser("redrive", help="move dead letters back to their action queue")
    _target_options(back, suppress=True)
    _selection_options(back)
    back.add_argument("--no-move-task", action="store_true",
                      help="move message by message even when SQS StartMessageMoveTask is available")
    back.add_argument("--no-wait", action="store_true", help="do not wait for a move task to finish")

    drop = commands.add_parser("purge", help="delete dead letters (asks first)")
    _target_options(drop, suppress=True)
    _selection_options(drop)
    drop.add_argument("--yes", action="store_true", help="do not ask for confirmation")


def _selection(args: argparse.Namespace) -> Selection:
    older = parse_duration(args.older_than) if args.older_than else None
    return Selection(frozenset(args.code or ()), older)


# ------------------------------------------------------------------------------------------------ commands

def main(args: argparse.Namespace) -> int:
    out, err, ask = args.context.out, args.context.err, args.context.ask
    try:
        target = args.context.target or resolve_target(args.stack, args.region, args.state)
        queues = target.queues(args.action)
        sqs = target.client("sqs")
        selection = _selection(args)
        if args.dlq_command == "list":
            return _list(sqs, queues, selection, args.json, target, out)
        if args.dlq_command == "redrive":
            return _redrive(sqs, queues, selection, args, out, target.move_tasks)
        return _purge(sqs, queues, selection, args.yes, target, out, err, ask)
    except DlqError as exc:
        print(f"error: {exc}", file=err)
        return 1
    except (BotoCoreError, ClientError) as exc:
        print(f"error: {explain(exc, stack=args.stack, region=pick_region(args.region) if args.stack else None)}",
              file=err)
        return 1


def _list(sqs: Any, queues: dict[str, ActionQueues], selection: Selection, as_json: bool, target: Target,
          out: TextIO) -> int:
    now = time.time()
    found: dict[str, list[DeadLetter]] = {action: peek(sqs, q, selection, now=now) for action, q in queues.items()}
    if as_json:
        rows = [letter.describe(action, now) for action, letters in found.items() for letter in letters]
        json.dump(rows, out, indent=2, ensure_ascii=False)
        out.write("\n")
        return 0
    print(f"Dead-letter queues of {target.description}", file=out)
    for action, letters in found.items():
        print(f"\n{action}: {len(letters)} dead letter(s)   {queues[action].dead_letter_queue_url}", file=out)
        if not letters:
            continue
        print(f"  {'AGE':>6}  {'ERROR CODE':<24} {'HTTP':<4}  {'SEGMENT MESSAGE ID':<36} {'EVENT':<30} SUBSCRIPTION",
              file=out)
        for letter in letters:
            row = letter.describe(action, now)
            event = row["eventType"] or "?"
            if row["eventName"]:
                event += f" \"{row['eventName']}\""
            print(f"  {_age(row['ageSeconds']):>6}  {row['errorCode']:<24} {row['httpStatus'] or '':<4}  "
                  f"{row['segmentMessageId'] or '?':<36} {event:<30} {row['subscription'] or ''}", file=out)
            detail = row["errorMessage"] or ""
            if row["qualtricsRequestId"]:
                detail += f"  (Qualtrics requestId {row['qualtricsRequestId']})"
            if detail:
                print(f"  {'':>6}  {detail}", file=out)
    return 0


def _redrive(sqs: Any, queues: dict[str, ActionQueues], selection: Selection, args: argparse.Namespace,
             out: TextIO, move_tasks: bool = True) -> int:
    status = 0
    said: set[str] = set()
    for action, q in queues.items():
        result = redrive(sqs, q, selection, use_move_task=move_tasks and not args.no_move_task,
                         wait_seconds=0 if args.no_wait else 300)
        if result.method == "nothing":
            print(f"{action}: nothing to redrive", file=out)
        elif result.method == "move-task":
            print(f"{action}: move task {result.task_handle or ''} {result.task_status or ''}, "
                  f"{result.moved} message(s) moved so far", file=out)
        else:
            print(f"{action}: {result.moved} message(s) sent back to the queue, {result.skipped} not selected, "
                  f"{result.failed} failed", file=out)
        for note in result.notes:
            if note.startswith("SQS move tasks unavailable"):   # the endpoint's, not the queue's: say it once
                if note in said:
                    continue
                said.add(note)
            print(f"  {note}", file=out)
        if result.failed or result.task_status in ("FAILED", "CANCELLED"):
            status = 1
    return status


def _purge(sqs: Any, queues: dict[str, ActionQueues], selection: Selection, yes: bool, target: Target,
           out: TextIO, err: TextIO, ask: Callable[[str], str]) -> int:
    if not yes:
        if selection.everything:
            counts = {a: sum(queue_counts(sqs, q.dead_letter_queue_url).values()) for a, q in queues.items()}
        else:
            counts = {a: len(peek(sqs, q, selection)) for a, q in queues.items()}
        total = sum(counts.values())
        if not total:
            print("Nothing to purge.", file=out)
            return 0
        listing = ", ".join(f"{a} {n}" for a, n in counts.items() if n)
        try:
            answer = ask(f"Delete {total} dead letter(s) ({listing}) from {target.description}? "
                         "They cannot be redriven afterwards. [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("Not purged.", file=err)
            return 1
    for action, q in queues.items():
        result = purge(sqs, q, selection)
        extra = f", {result.skipped} not selected" if result.method == "message-by-message" else ""
        print(f"{action}: {result.deleted} dead letter(s) deleted{extra}", file=out)
        for note in result.notes:
            print(f"  {note}", file=out)
    return 0


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
