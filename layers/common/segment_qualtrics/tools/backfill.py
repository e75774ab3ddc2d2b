"""Backfill: load past Segment events into Qualtrics in bulk, through the subscriptions' rules.

    python -m segment_qualtrics.tools.backfill FILE [--stack NAME | --state .local-stack/state.json]
        [--config subscriptions.json] [--env NAME=VALUE]... [--contacts-mailing-list CG_...]
        [--lane ACTION=bulk|queue]... [--dry-run] [--json] [--restart] ...

FILE holds Segment events, one JSON object a line (Segment's archive/storage export; gzip or not), or one
JSON array. Each event goes through the subscriptions file's triggers and mappings as live traffic does.
Contacts (when a mailing list is given for them) and transactions go to Qualtrics as transaction-contacts
imports (up to 10,000 contacts or 5 MB each); workflows, and whatever an import cannot express, go to the
action's queue at ``--queue-rate``, for the workers to deliver. Lines that are not valid events, and the
contacts Qualtrics refuses, go to the reject file (``FILE.rejects.ndjson``) with their line number and reason.

Resumable: ``FILE.backfill-checkpoint.json`` records how far the input was read and every import submitted;
after an interruption the same command goes on from there, and re-running a finished backfill does nothing.
Transactions carry the recovery marker live ones carry, and their keys are marked in the idempotency table,
so a later live or replayed copy of the same event is recognised, not duplicated.

Exit status: 0 finished (rejects, if any, are listed in the reject file), 1 the run stopped on an error,
2 bad usage, 130 interrupted (Ctrl-C): run the same command again to resume.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from segment_qualtrics.destination.actions import ACTIONS
from segment_qualtrics.destination.subscriptions import ConfigError, load_subscriptions
from segment_qualtrics.ingest.core import MAX_BODY_BYTES
from segment_qualtrics.tools.backfill_input import InputError, records
from segment_qualtrics.tools.backfill_plan import (
    BULK,
    CONTACTS,
    QUEUE,
    TRANSACTIONS,
    WORKFLOWS,
    Item,
    Planner,
    Reject,
    import_batches,
)
from segment_qualtrics.tools.backfill_run import Backfill, BackfillError, Options, Stats

DEFAULT_STATE = Path(".local-stack") / "state.json"
SHOWN_PAYLOADS = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="Segment events: one JSON object a line (gzip or not), or a JSON array")
    where = parser.add_argument_group("where to load (default: the local stack of `make run`)")
    where.add_argument("--stack", help="deployed stack name: its outputs name the secret, queues and table")
    where.add_argument("--region", help="AWS region of --stack (default: AWS configuration)")
    where.add_argument("--state", type=Path, default=DEFAULT_STATE,
                       help=f"local stack state (default: {DEFAULT_STATE})")
    where.add_argument("--base-url", default=os.environ.get("QUALTRICS_BASE_URL") or None,
                       help="Qualtrics base URL override (default: $QUALTRICS_BASE_URL; the local stack's sandbox)")
    rules = parser.add_argument_group("rules")
    rules.add_argument("--config", type=Path, help="subscriptions file (default: $DESTINATION_CONFIG or the packaged)")
    rules.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                       help="set a variable for ${NAME} references in the subscriptions file (repeatable)")
    rules.add_argument("--subscription", action="append", default=[], metavar="NAME",
                       help="load only this subscription's events (repeatable; default: every enabled one)")
    rules.add_argument("--contacts-mailing-list", metavar="CG_ID",
                       help="import contacts into this mailing list (bulk lane); without it contacts are queued")
    rules.add_argument("--lane", action="append", default=[], metavar="ACTION=bulk|queue",
                       help=f"lane of an action (defaults: {CONTACTS}=bulk with a mailing list, else queue; "
                            f"{TRANSACTIONS}=bulk; {WORKFLOWS}=queue, always)")
    files = parser.add_argument_group("files")
    files.add_argument("--checkpoint", type=Path, help="default: FILE.backfill-checkpoint.json")
    files.add_argument("--rejects", type=Path, help="default: FILE.rejects.ndjson (appended)")
    files.add_argument("--restart", action="store_true", help="forget the checkpoint and the reject file; start over")
    tuning = parser.add_argument_group("limits")
    tuning.add_argument("--import-size", type=_positive(10_000), default=10_000, help="contacts per import (<= 10000)")
    tuning.add_argument("--max-imports", type=_positive(100), default=20,
                        help="imports running at once (default 20; Qualtrics runs 25 per brand)")
    tuning.add_argument("--queue-rate", type=float, default=50.0, help="queue-lane messages per second (default 50)")
    tuning.add_argument("--poll-seconds", type=float, default=2.0, help="seconds between import status polls")
    tuning.add_argument("--lease-seconds", type=_positive(12 * 3600), default=6 * 3600,
                        help="how long a claimed transaction key stays reserved for the backfill (default 6 h)")
    tuning.add_argument("--max-line-bytes", type=_positive(64 * 1024 * 1024), default=MAX_BODY_BYTES,
                        help=f"longest line kept (default {MAX_BODY_BYTES}, the ingest's body limit)")
    out = parser.add_argument_group("output")
    out.add_argument("--dry-run", action="store_true", help="read everything, print what would be sent; send nothing")
    out.add_argument("--json", action="store_true", help="print the summary as JSON")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")


def _positive(limit: int):
    def parse(text: str) -> int:
        value = int(text)
        if not 1 <= value <= limit:
            raise argparse.ArgumentTypeError(f"must be from 1 to {limit}")
        return value
    return parse


def main(argv: Sequence[str] | None = None, *, environ: Mapping[str, str] = os.environ,
         out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    parser = argparse.ArgumentParser(prog="python -m segment_qualtrics.tools.backfill",
                                     description=__doc__.split("\n")[0])
    add_arguments(parser)
    return _main(parser.parse_args(argv), environ, out, err)


def run(args: argparse.Namespace) -> int:
    """``segment-qualtrics backfill``: the one command line's entry (its ``args.context`` says where to write)."""
    return _main(args, args.context.environ, args.context.out, args.context.err)


def _main(args: argparse.Namespace, environ: Mapping[str, str], out: TextIO, err: TextIO) -> int:
    try:
        return _run(args, environ, out, err)
    except (BackfillError, InputError, ConfigError) as exc:
        print(f"error: {exc}", file=err)
        return 1
    except KeyboardInterrupt:   # a second Ctrl-C: the checkpoint on disk is whole (replaced atomically)
        print("stopped at once; run the same command again to resume from the last checkpoint", file=err)
        return 130


def _run(args: argparse.Namespace, environ: Mapping[str, str], out: TextIO, err: TextIO) -> int:
    env = dict(environ)
    for pair in args.env:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise BackfillError(f"--env wants NAME=VALUE, got {pair!r}")
        env[name] = value
    lanes = _lanes(args.lane, args.contacts_mailing_list)
    subscriptions = load_subscriptions(args.config, env)
    if args.subscription:
        names = {s.name for s in subscriptions if s.enabled}
        unknown = [n for n in args.subscription if n not in names]
        if unknown:
            raise BackfillError(f"--subscription {', '.join(map(repr, unknown))}: no enabled subscription of that "
                                f"name; enabled: {', '.join(map(repr, sorted(names)))}")
        subscriptions = [s for s in subscriptions if s.name in args.subscription]
    if not args.file.is_file():
        raise BackfillError(f"{args.file}: no such file")

    def planner() -> Planner:
        return Planner(subscriptions, lanes, args.contacts_mailing_list)

    if args.dry_run:
        return _dry_run(args, planner(), out)
    checkpoint = args.checkpoint or args.file.with_name(args.file.name + ".backfill-checkpoint.json")
    rejects = args.rejects or args.file.with_name(args.file.name + ".rejects.ndjson")
    if args.restart:
        checkpoint.unlink(missing_ok=True)
        rejects.unlink(missing_ok=True)
    target = _connect(args)
    options = Options(import_contacts=args.import_size, segment_items=args.import_size, max_imports=args.max_imports,
                      poll_seconds=args.poll_seconds, queue_rate=args.queue_rate, lease_seconds=args.lease_seconds)
    stop = threading.Event()
    fingerprint = hashlib.sha256(json.dumps(
        [[s.name, s.enabled, s.action.slug, s.trigger.source, s.mapping] for s in subscriptions]
        + [sorted(lanes.items()), args.contacts_mailing_list], sort_keys=True, default=str).encode()).hexdigest()
    bar = _Progress(args.file.stat().st_size, enabled=not (args.no_progress or args.json) and err.isatty(), err=err)
    run = Backfill(stream_factory=lambda: _open(args.file), input_identity=_identity(args.file), planner=planner,
                   fingerprint=fingerprint, checkpoint_path=checkpoint, rejects_path=rejects, client=target.client,
                   store=target.store, publisher=target.publisher, queue_actions=set(target.queue_urls),
                   options=options, max_record_bytes=args.max_line_bytes, stop=stop, on_progress=bar.update)
    if run.already_finished:
        print(f"{args.file}: this backfill finished already (checkpoint {checkpoint}); nothing to do. "
              "Pass --restart to run it again.", file=err)
        _print_summary(run.stats, args, checkpoint, rejects, out, finished=True, elapsed=None)
        return 0
    if run.resumed:
        print(f"resuming from {checkpoint}: line {run.checkpoint.data['position']['number']} read, "
              f"{len(run.checkpoint.data['imports'])} import(s) to poll", file=err)
    previous = _on_interrupt(stop, err)
    started = time.monotonic()
    try:
        stats = run.run()
    finally:
        _restore(previous)
        bar.close()
    elapsed = time.monotonic() - started
    if run.input_error:
        print(f"error: {run.input_error}; what was read before it is loaded", file=err)
    finished = bool(run.checkpoint.data.get("finished"))
    _print_summary(stats, args, checkpoint, rejects, out, finished=finished, elapsed=elapsed)
    if stop.is_set():
        print(f"stopped at a checkpoint ({checkpoint}); run the same command again to resume", file=err)
        return 130
    return 0 if finished else 1


def _lanes(pairs: list[str], mailing_list: str | None) -> dict[str, str]:
    lanes = {CONTACTS: BULK if mailing_list else QUEUE, TRANSACTIONS: BULK, WORKFLOWS: QUEUE}
    for pair in pairs:
        action, sep, lane = pair.partition("=")
        if not sep or action not in ACTIONS or lane not in (BULK, QUEUE):
            raise BackfillError(f"--lane wants ACTION=bulk|queue with ACTION one of {', '.join(ACTIONS)}; got {pair!r}")
        if action == WORKFLOWS and lane == BULK:
            raise BackfillError(f"{WORKFLOWS} has no bulk API: it always goes through its queue")
        if action == CONTACTS and lane == BULK and not mailing_list:
            raise BackfillError(f"{CONTACTS}=bulk needs --contacts-mailing-list (an import goes into a mailing list)")
        lanes[action] = lane
    return lanes


def _open(path: Path):
    from segment_qualtrics.tools.backfill_input import open_input

    return open_input(str(path))


def _identity(path: Path) -> dict[str, Any]:
    """The input as the checkpoint knows it: its size and a hash of its first MiB (cheap, and catches another file)."""
    with open(path, "rb") as handle:
        head = hashlib.sha256(handle.read(1024 * 1024)).hexdigest()
    return {"name": path.name, "size": path.stat().st_size, "head": head}


# --- dry run ------------------------------------------------------------------------------------

def _dry_run(args: argparse.Namespace, planner: Planner, out: TextIO) -> int:
    stats = Stats()
    bulk: list[Item] = []
    queued: list[Item] = []
    rejects: list[Reject] = []
    stream, raw = _open(args.file)
    try:
        for record in records(stream, args.max_line_bytes):
            planned = planner.plan(record.number, record.data, record.problem)
            stats.lines += 1
            stats.invalid += not planned.valid
            stats.unmatched += planned.valid and not planned.matched
            stats.duplicates += planned.duplicates
            stats.matched.update(planned.matched)
            stats.rejects += len(planned.rejects)
            rejects += planned.rejects[: max(0, SHOWN_PAYLOADS - len(rejects))]
            for item in planned.items:
                if item.lane == BULK:
                    bulk.append(item)
                else:
                    stats.queued[item.action] += 1
                    if len(queued) < SHOWN_PAYLOADS:
                        queued.append(item)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
    finally:
        stream.close()
        raw.close()
    batches, too_big = import_batches(bulk, args.import_size)
    stats.imports_submitted = len(batches)
    stats.contacts_loaded = sum(len(b.items) for b in batches)
    stats.transactions_loaded = sum(1 for b in batches for i in b.items if i.action == TRANSACTIONS)
    summary = {"dryRun": True, **_summary_json(stats), "imports": [
        {"directory": b.directory, "mailingList": b.mailing_list, "contacts": len(b.items),
         "firstContacts": [i.contact for i in b.items[:SHOWN_PAYLOADS]], "transactionFields": list(b.fields)}
        for b in batches[:SHOWN_PAYLOADS]],
        "queueMessages": [json.loads(i.message().to_json()) for i in queued],
        "firstRejects": [r.to_json() for r in rejects], "tooLargeForAnImport": len(too_big)}
    if args.json:
        print(json.dumps(summary, indent=2, ensure_ascii=False), file=out)
        return 0
    print(f"dry run of {args.file}: nothing sent", file=out)
    _print_table(stats, out)
    print(f"  would submit {len(batches)} import(s) of {stats.contacts_loaded} contact(s) "
          f"({stats.transactions_loaded} with a transaction)", file=out)
    for batch in summary["imports"]:
        print(f"  import into {batch['directory']} / {batch['mailingList']}: {batch['contacts']} contacts; first: "
              f"{json.dumps(batch['firstContacts'][:1], ensure_ascii=False)[:400]}", file=out)
    for message in summary["queueMessages"]:
        print(f"  queue {message['action']}: {json.dumps(message, ensure_ascii=False)[:400]}", file=out)
    for reject in summary["firstRejects"]:
        print(f"  reject line {reject['line']}: {reject['reason'][:300]}", file=out)
    return 0


# --- the stack ----------------------------------------------------------------------------------

class _Target:
    def __init__(self, client: Any, store: Any, publisher: Any, queue_urls: dict[str, str]) -> None:
        self.client, self.store, self.publisher, self.queue_urls = client, store, publisher, queue_urls


def _connect(args: argparse.Namespace) -> _Target:
    """The Qualtrics client (the stack's secret), the idempotency table and the action queues."""
    from segment_qualtrics.adapters.aws import SqsPublisher
    from segment_qualtrics.adapters.qualtrics import QualtricsClient
    from segment_qualtrics.tools.dlq import DlqError
    from segment_qualtrics.tools.dlq_commands import resolve_target

    try:
        target = resolve_target(args.stack, args.region, args.state)
    except DlqError as exc:
        raise BackfillError(str(exc)) from None
    if target.outputs is not None:
        secret_id, table = target.outputs.get("QualtricsSecretArn"), target.outputs.get("IdempotencyTableName")
        urls = {a: target.outputs.get(f"{a[0].upper()}{a[1:]}QueueUrl") for a in ACTIONS}
        base_url = args.base_url
    else:
        state = target.state or {}   # the local stack's target always has its state
        secret_id, table = "QualtricsSecret", "IdempotencyTable"
        urls = {a: (state.get("queues") or {}).get(f"{a[0].upper()}{a[1:]}Queue") for a in ACTIONS}
        base_url = args.base_url or state.get("sandboxUrl")
    if not secret_id or not table:
        raise BackfillError("the stack has no QualtricsSecretArn / IdempotencyTableName output")
    try:
        secret = json.loads(target.client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"])
        client = QualtricsClient.with_token(secret.get("apiToken") or "", secret.get("datacenter") or "iad1",
                                            base_url)
    except Exception as exc:  # noqa: BLE001 - one clear line, whatever AWS or the secret said
        from segment_qualtrics.adapters.aws_errors import explain

        raise BackfillError(f"cannot read the Qualtrics secret {secret_id}: {explain(exc, secret=secret_id)}") from None
    queue_urls = {a: u for a, u in urls.items() if u}
    from segment_qualtrics.tools.backfill_store import BulkIdempotencyStore

    return _Target(client, BulkIdempotencyStore(target.client("dynamodb"), table),
                   SqsPublisher(target.client("sqs"), queue_urls), queue_urls)


# --- output -------------------------------------------------------------------------------------

def _summary_json(stats: Stats) -> dict[str, Any]:
    return {"lines": stats.lines, "invalidLines": stats.invalid, "unmatched": stats.unmatched,
            "duplicatesInInput": stats.duplicates, "matched": dict(stats.matched), "rejects": stats.rejects,
            "imports": {"submitted": stats.imports_submitted, "finished": stats.imports_finished,
                        "failed": stats.imports_failed},
            "contactsLoaded": stats.contacts_loaded, "contactsAdded": stats.contacts_added,
            "contactsUpdated": stats.contacts_updated, "transactionsLoaded": stats.transactions_loaded,
            "queued": dict(stats.queued), "alreadyDelivered": stats.already_delivered,
            "inDeliveryElsewhere": stats.in_delivery, "qualtricsCalls": dict(stats.calls)}


def _print_summary(stats: Stats, args: argparse.Namespace, checkpoint: Path, rejects: Path, out: TextIO, *,
                   finished: bool, elapsed: float | None) -> None:
    if args.json:
        summary = {"finished": finished, **_summary_json(stats), "checkpoint": str(checkpoint),
                   "rejectFile": str(rejects)}
        if elapsed is not None:
            summary["seconds"] = round(elapsed, 3)
        print(json.dumps(summary, indent=2, ensure_ascii=False), file=out)
        return
    print(f"backfill of {args.file}: {'finished' if finished else 'not finished'}", file=out)
    _print_table(stats, out)
    if stats.rejects:
        print(f"  rejects are in {rejects}", file=out)
    if elapsed:
        print(f"  {elapsed:.1f} s this run", file=out)


def _print_table(stats: Stats, out: TextIO) -> None:
    rows = [("lines read", stats.lines), ("  invalid", stats.invalid), ("  matching no subscription", stats.unmatched),
            ("  duplicates in the input", stats.duplicates)]
    rows += [(f"  matched {name!r}", n) for name, n in sorted(stats.matched.items())]
    rows += [("imports submitted", stats.imports_submitted), ("  finished", stats.imports_finished),
             ("  failed as a whole", stats.imports_failed), ("contacts loaded", stats.contacts_loaded),
             ("transactions loaded", stats.transactions_loaded)]
    rows += [(f"queued for {action}", n) for action, n in sorted(stats.queued.items())]
    rows += [("already delivered (skipped)", stats.already_delivered),
             ("being delivered by a worker (skipped)", stats.in_delivery), ("rejects", stats.rejects)]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value:>10,}", file=out)


class _Progress:
    """A tqdm bar over the input's bytes, with the counts as its postfix (nothing when not a terminal)."""

    def __init__(self, total: int, *, enabled: bool, err: TextIO) -> None:
        self.bar = None
        self.last = 0.0
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="B", unit_scale=True, file=err, dynamic_ncols=True)

    def update(self, run: Backfill) -> None:
        if self.bar is None or time.monotonic() - self.last < 0.2:
            return
        self.last = time.monotonic()
        stats = run.stats
        self.bar.n = run.bytes_read()
        matched = " ".join(f"{name[:12]}={n}" for name, n in stats.matched.items())
        self.bar.set_postfix_str(
            f"lines={stats.lines} {matched} imports={stats.imports_submitted}/{run.imports_running()} running/"
            f"{stats.imports_finished} done contacts={stats.contacts_loaded} tx={stats.transactions_loaded} "
            f"queued={sum(stats.queued.values())} rejects={stats.rejects}", refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _on_interrupt(stop: threading.Event, err: TextIO) -> dict[int, Any]:
    """Ctrl-C (or SIGTERM) sets ``stop``: the run ends at its next checkpoint. A second one stops at once."""
    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping at the next checkpoint (Ctrl-C again to stop at once)...", file=err)

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, handler)
    return previous


def _restore(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)

if __name__ == "__main__":
    sys.exit(main())
