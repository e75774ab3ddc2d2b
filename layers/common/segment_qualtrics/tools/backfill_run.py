"""The backfill's run: read, plan, claim, submit imports, poll them, queue the rest; resumable.

The work goes by *segments*: records are read until ``segment_items`` bulk items are planned (or the input
ends). A segment's transaction keys are claimed in the idempotency table (as a worker claims them, with a
lease that outlasts the imports), then its queue-lane items are queued and its imports submitted one by one.
The checkpoint (written atomically after each step) holds the segment's start, what of it is already
submitted or queued, and every import not yet finished with the input line of each of its contacts. So a
resume re-reads the segment, skips what was sent, and polls the imports already submitted.

An import whose submission got no answer (a crash or a lost network in the middle of the call) may or may not
exist: its items go to the queue lane, where the workers check Qualtrics for the transaction's recovery marker
before creating it (the key is released "uncertain" first). The same for an import that fails as a whole.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from segment_qualtrics.delivery.idempotency import ClaimState, IdempotencyStore
from segment_qualtrics.destination.envelope import QueueMessage
from segment_qualtrics.destination.errors import DestinationError
from segment_qualtrics.tools.backfill_input import InputError, Position, Record, records
from segment_qualtrics.tools.backfill_plan import (
    BULK,
    QUEUE,
    TRANSACTIONS,
    ImportBatch,
    Item,
    Planner,
    Reject,
    import_batches,
)

CHECKPOINT_VERSION = 1
DEFAULT_LEASE_SECONDS = 6 * 3600


class QueuePublisher(Protocol):
    def publish(self, action: str, messages: list) -> list: ...


class BulkClient(Protocol):
    def create_transaction_batch(self, directory_id: str, creation_date: str) -> str: ...
    def start_import(self, directory_id: str, mailing_list_id: str, body: dict[str, Any], *,
                     timeout: tuple[float, float] | None = None) -> str: ...
    def import_status(self, directory_id: str, mailing_list_id: str, import_id: str, *,
                      summary: bool = False) -> dict[str, Any]: ...


class BackfillError(Exception):
    """The run cannot go on (a changed input, a refused credential, ...): said once, clearly."""


@dataclass
class Options:
    segment_items: int = 10_000         # bulk items per segment
    segment_lines: int = 50_000         # records per segment, whatever they give
    import_contacts: int = 10_000
    max_imports: int = 20               # Qualtrics runs 25 at once per brand: leave some for others
    poll_seconds: float = 1.0
    queue_rate: float = 50.0            # queue-lane messages per second
    lease_seconds: int = DEFAULT_LEASE_SECONDS
    claim_threads: int = 16
    # (connect, read) seconds for an import's POST. A late answer is an import in doubt (its lines go the per-event
    # way), so wait long: a 5 MB upload, or a busy Qualtrics, outlasts the 10 s a small call is given.
    import_timeout: tuple[float, float] = (10.0, 300.0)


@dataclass
class Checkpoint:
    """The resumable state, one JSON file replaced atomically."""

    path: Path
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Checkpoint | None:
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise BackfillError(f"the checkpoint {path} is not JSON ({exc}); remove it to start over") from None
        if not isinstance(data, dict) or data.get("version") != CHECKPOINT_VERSION:
            raise BackfillError(f"the checkpoint {path} is not one this version writes; remove it to start over")
        return cls(path, data)

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        # json.dumps, not json.dump: dump streams through the pure-Python encoder, a write per token (the
        # checkpoint holds every running import's lines: seconds of CPU per save with 20 imports running).
        text = json.dumps(self.data, separators=(",", ":"))
        with open(tmp, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)


@dataclass
class Stats:
    lines: int = 0
    invalid: int = 0
    unmatched: int = 0
    duplicates: int = 0
    matched: Counter = field(default_factory=Counter)
    rejects: int = 0
    imports_submitted: int = 0
    imports_finished: int = 0
    imports_failed: int = 0
    contacts_added: int = 0
    contacts_updated: int = 0
    contacts_loaded: int = 0          # contacts of imports Qualtrics processed (bulk lane)
    transactions_loaded: int = 0
    queued: Counter = field(default_factory=Counter)
    already_delivered: int = 0        # transaction keys a worker had completed already
    in_delivery: int = 0              # ... or was delivering at the time
    calls: Counter = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        return {k: dict(v) if isinstance(v, Counter) else v for k, v in data.items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Stats:
        stats = cls()
        for key, value in (data or {}).items():
            if key in cls.__dataclass_fields__:
                setattr(stats, key, Counter(value) if isinstance(getattr(stats, key), Counter) else value)
        return stats


class Backfill:
    def __init__(self, *, stream_factory: Callable[[], tuple[BinaryIO, BinaryIO]], input_identity: dict[str, Any],
                 planner: Callable[[], Planner], fingerprint: str, checkpoint_path: Path, rejects_path: Path,
                 client: BulkClient, store: IdempotencyStore | None, publisher: QueuePublisher | None,
                 queue_actions: set[str], options: Options, max_record_bytes: int,
                 stop: threading.Event | None = None, on_progress: Callable[[Backfill], None] | None = None,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
        self.stream_factory = stream_factory
        self.identity = input_identity
        self.planner_factory = planner
        self.planner = planner()
        self._submitting: dict[str, Any] | None = None
        self.fingerprint = fingerprint
        self.rejects_path = rejects_path
        self.client = client
        self.store = store
        self.publisher = publisher
        self.queue_actions = queue_actions
        self.options = options
        self.max_record_bytes = max_record_bytes
        self.stop = stop or threading.Event()
        self.on_progress = on_progress or (lambda run: None)
        self.clock, self.sleep = clock, sleep
        self.raw: BinaryIO | None = None
        self.resumed = False
        self.already_finished = False
        self.input_error: str | None = None
        self._last_publish = 0.0
        self._last_poll = 0.0
        loaded = Checkpoint.load(checkpoint_path)
        if loaded is None:
            self.checkpoint = Checkpoint(checkpoint_path, {
                "version": CHECKPOINT_VERSION, "input": input_identity, "fingerprint": fingerprint,
                "position": {"number": 0, "offset": 0, "array": None}, "segment": None, "batches": {},
                "imports": [], "stats": {}, "finished": False, "started": clock()})
        else:
            self.checkpoint = loaded
            self.resumed = True
            if loaded.data.get("input") != input_identity:
                raise BackfillError(f"the checkpoint {checkpoint_path} is for another input (size or first bytes "
                                    "differ): remove it, or pass --restart, to start over")
            if loaded.data.get("fingerprint") != fingerprint:
                raise BackfillError(f"the checkpoint {checkpoint_path} was made with another subscriptions file "
                                    "or other lanes: use the same, or pass --restart to start over")
            self.already_finished = bool(loaded.data.get("finished"))
        self.stats = Stats.from_json(self.checkpoint.data.get("stats") or {})

    # --- the run ----------------------------------------------------------------------------------
    def run(self) -> Stats:
        if self.already_finished:
            return self.stats
        stream, self.raw = self.stream_factory()
        try:
            self._poll(block=False)
            self._read_all(stream)
            while self.checkpoint.data["imports"] and not self.stop.is_set():
                self._poll(block=True)
        finally:
            stream.close()
            self.raw.close()
            self._save()
        if not self.stop.is_set() and self.input_error is None and not self.checkpoint.data["imports"]:
            self.checkpoint.data["finished"] = True
            self.checkpoint.data["segment"] = None
            self._save()
        return self.stats

    def _read_all(self, stream: BinaryIO) -> None:
        data = self.checkpoint.data
        segment = data.get("segment")
        position = Position(**(segment["start"] if segment else data["position"]))
        reader = records(stream, self.max_record_bytes, position)
        while not self.stop.is_set():
            start = Position(position.number, position.offset, position.array)
            resuming = data.get("segment")
            until = resuming["end"]["number"] if resuming else None
            planned = self._plan_segment(reader, until)
            if planned is None:   # stopped while reading: nothing of the segment was sent
                return
            items, rejects, lines, matched = planned
            if not lines and not resuming:
                data["position"] = vars(position).copy()
                return   # the end of the input
            self._maybe_poll()
            self._run_segment(start, position, items, rejects, lines, matched, resuming)
            if self.stop.is_set():
                return
            data["position"] = vars(position).copy()
            data["segment"] = None
            self._save()
            if self.input_error:   # what was read before the error is loaded; the rest cannot be read
                return

    def _plan_segment(self, reader: Iterator[Record], until: int | None):
        items: list[Item] = []
        rejects: list[Reject] = []
        lines = invalid = unmatched = duplicates = 0
        matched: Counter = Counter()
        bulk = 0
        try:
            for record in reader:
                lines += 1
                planned = self.planner.plan(record.number, record.data, record.problem)
                items += planned.items
                rejects += planned.rejects
                matched.update(planned.matched)
                duplicates += planned.duplicates
                if not planned.valid:
                    invalid += 1
                elif not planned.matched:
                    unmatched += 1
                bulk += sum(item.lane == BULK for item in planned.items)
                if until is not None:
                    if record.number >= until:
                        break
                elif bulk >= self.options.segment_items or lines >= self.options.segment_lines:
                    break   # a segment holds at most one import's worth, and a bounded number of records
                if self.stop.is_set() and until is None:
                    return None
                if lines % 1000 == 0:
                    self.on_progress(self)
        except InputError as exc:
            self.input_error = str(exc)
        return items, rejects, lines, (matched, invalid, unmatched, duplicates)

    def _run_segment(self, start: Position, end: Position, items: list[Item], rejects: list[Reject], lines: int,
                     counts: tuple, resuming: dict[str, Any] | None) -> None:
        data = self.checkpoint.data
        if resuming is None:
            # Recorded before anything is claimed: a resume knows these claims are its own.
            data["segment"] = {"start": vars(start).copy(), "end": vars(end).copy(),
                               "leaseUntil": self.clock() + self.options.lease_seconds, "handled": []}
            self._write_rejects(rejects)
            matched, invalid, unmatched, duplicates = counts
            self.stats.lines += lines
            self.stats.invalid += invalid
            self.stats.unmatched += unmatched
            self.stats.duplicates += duplicates
            self.stats.matched.update(matched)
            self._save()
        segment = data["segment"]
        handled = {(line, sub) for line, sub in segment["handled"]}
        items = [item for item in items if (item.line, item.subscription) not in handled]
        queue_items = [item for item in items if item.lane == QUEUE]
        bulk_items = [item for item in items if item.lane == BULK]
        bulk_items = self._claim(bulk_items, segment, resuming is not None)
        batches, unfit = import_batches(bulk_items, self.options.import_contacts)
        for item in unfit:
            item.lane = QUEUE   # why_queue says why
        self._settle([], unfit, [])   # claimed, never sent: forgotten, so the worker claims them afresh
        self._queue(queue_items + unfit, segment, uncertain=False)
        for batch in batches:
            if self.stop.is_set():
                return
            self._submit(batch, segment)

    # --- idempotency ------------------------------------------------------------------------------
    def _claim(self, items: list[Item], segment: dict[str, Any], resuming: bool) -> list[Item]:
        """Claim the transaction keys of the segment's bulk items; drop those a worker has or is delivering.

        On a resume, a key still leased is this backfill's own when the segment records it as claimed (or, if
        the run stopped while claiming, when the segment's lease has not run out)."""
        claiming = [item for item in items if item.claims]
        store = self.store
        if not claiming or store is None:
            return items
        recorded = segment.get("claimed")
        ours = {(line, sub) for line, sub in recorded} if recorded is not None else None
        lease_left = segment["leaseUntil"] > self.clock()
        lease = self.options.lease_seconds
        if hasattr(store, "claim_many"):   # the DynamoDB store: a few calls per hundred keys
            claims = store.claim_many([item.key for item in claiming], lease)
        else:
            with ThreadPoolExecutor(self.options.claim_threads) as pool:
                claims = list(pool.map(lambda item: store.claim(item.key, lease), claiming))
        skipped: set[int] = set()
        claimed: list[list[Any]] = []
        for item, claim in zip(claiming, claims, strict=True):
            own = resuming and ((item.line, item.subscription) in ours if ours is not None else lease_left)
            if claim.state is ClaimState.DONE:
                self.stats.already_delivered += 1
                skipped.add(id(item))
            elif claim.state is ClaimState.BUSY and not own:
                self.stats.in_delivery += 1
                skipped.add(id(item))
            else:
                claimed.append([item.line, item.subscription])
        segment["claimed"] = claimed
        self._save()
        return [item for item in items if id(item) not in skipped]

    def _settle(self, done: list[Item], undone: list[Item], uncertain: list[Item]) -> None:
        """Keys: delivered → COMPLETED; refused → forgotten; may have landed → released uncertain."""
        store = self.store
        if store is None:
            return
        if hasattr(store, "complete_many"):
            store.complete_many([i.key for i in done if i.claims])
            done = []
        work = ([(store.complete, i.key) for i in done if i.claims]
                + [(lambda k: store.release(k, uncertain=False), i.key) for i in undone if i.claims]
                + [(lambda k: store.release(k, uncertain=True), i.key) for i in uncertain if i.claims])
        if not work:
            return
        with ThreadPoolExecutor(self.options.claim_threads) as pool:
            list(pool.map(lambda job: job[0](job[1]), work))

    # --- queue lane -------------------------------------------------------------------------------
    def _to_queue(self, items: list[Item], why: str) -> list[Item]:
        for item in items:
            item.lane, item.why_queue = QUEUE, why
        return items

    def _queue(self, items: list[Item], segment: dict[str, Any] | None, *, uncertain: bool) -> None:
        """Send items to their action queues. ``uncertain``: they may have landed already (an import in doubt);
        their keys are released so, and the worker looks for the transaction's marker before creating it."""
        if not items:
            return
        publisher = self.publisher
        sendable = [i for i in items if publisher is not None and i.action in self.queue_actions]
        sendable_ids = {id(i) for i in sendable}
        refused = [i for i in items if id(i) not in sendable_ids]
        self._write_rejects([Reject(i.line, f"no queue for {i.action} to send it to"
                                    + (f" ({i.why_queue})" if i.why_queue else ""), i.subscription, i.message_id)
                             for i in refused])
        if uncertain:
            self._settle([], [], items)
        if publisher is None:   # nothing is sendable
            return
        by_action: dict[str, list[Item]] = {}
        for item in sendable:
            by_action.setdefault(item.action, []).append(item)
        for action, group in by_action.items():
            for start in range(0, len(group), 10):
                chunk = group[start:start + 10]
                self._pace(len(chunk))
                messages = [i.message() for i in chunk]
                unaccepted = {id(m) for m in publisher.publish(action, messages)}
                lost = [i for i, m in zip(chunk, messages, strict=True) if id(m) in unaccepted]
                self._write_rejects([Reject(i.line, f"SQS did not take it on the {action} queue", i.subscription,
                                            i.message_id) for i in lost])
                self.stats.queued[action] += len(chunk) - len(lost)
                if segment is not None:
                    segment["handled"] += [[i.line, i.subscription] for i in chunk]
            self._save()

    def _pace(self, count: int) -> None:
        gap = count / self.options.queue_rate
        wait = self._last_publish + gap - self.clock()
        if wait > 0:
            self.sleep(wait)
        self._last_publish = max(self._last_publish + gap, self.clock())

    # --- imports ----------------------------------------------------------------------------------
    def _batch_id(self, directory: str) -> str:
        batches = self.checkpoint.data["batches"]
        if directory not in batches:
            created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            batches[directory] = self._call("transaction_batch", self.client.create_transaction_batch,
                                            directory, created)
            self._save()
        return batches[directory]

    def _submit(self, batch: ImportBatch, segment: dict[str, Any]) -> None:
        self._maybe_poll()
        while len(self._running()) >= self.options.max_imports and not self.stop.is_set():
            self._poll(block=True)
        batch_id = self._batch_id(batch.directory) if batch.fields else None
        body = batch.body(batch_id)
        names = list(dict.fromkeys(i.subscription for i in batch.items))
        index = {name: n for n, name in enumerate(names)}
        # Compact: the key and the action follow from the subscription and the messageId.
        record = {"id": None, "directory": batch.directory, "mailingList": batch.mailing_list, "subscriptions": names,
                  "items": [[i.line, index[i.subscription], i.message_id] for i in batch.items]}
        self.checkpoint.data["imports"].append(record)
        segment["handled"] += [[i.line, i.subscription] for i in batch.items]
        self._save()   # before the call: a crash during it leaves the import "in doubt", never forgotten
        self._submitting = record
        try:
            self._start(record, batch, body)
        finally:
            self._submitting = None

    def _start(self, record: dict[str, Any], batch: ImportBatch, body: dict[str, Any]) -> None:
        while True:
            try:
                record["id"] = self.client.start_import(batch.directory, batch.mailing_list, body,
                                                        timeout=self.options.import_timeout)
                self.stats.calls["start_import"] += 1
                break
            except DestinationError as exc:
                self.stats.calls["start_import"] += 1
                if exc.status == 429 and not self.stop.is_set():
                    self._wait(exc.retry_after or self.options.poll_seconds)
                    continue
                if exc.retryable:   # no answer, or a 5xx: the import may exist
                    self._in_doubt(record, f"the import request got no clear answer ({exc.code}: {exc.message})")
                else:
                    self._refused(record, batch.items, f"Qualtrics refused the import: {exc.code}: {exc.message}")
                self._save()
                return
        self.stats.imports_submitted += 1
        self._save()
        self.on_progress(self)

    def _maybe_poll(self) -> None:
        """Poll the running imports when a poll interval has passed: finished ones are settled as they finish."""
        if self.clock() - self._last_poll >= self.options.poll_seconds:
            self._poll(block=False)

    def _wait(self, seconds: float) -> None:
        deadline = self.clock() + seconds
        while self.clock() < deadline and not self.stop.is_set():
            self._poll(block=False)
            self.sleep(min(self.options.poll_seconds, max(deadline - self.clock(), 0)))

    def _running(self) -> list[dict[str, Any]]:
        return [r for r in self.checkpoint.data["imports"] if r["id"]]

    def _poll(self, block: bool) -> None:
        """Look at each submitted import once (``block``: then wait a poll interval); settle the finished."""
        self._last_poll = self.clock()
        imports = len(self.checkpoint.data["imports"])
        for record in list(self.checkpoint.data["imports"]):
            if record is self._submitting:
                continue
            if record["id"] is None:   # a submission a crash cut short: in doubt
                self._in_doubt(record, "the run stopped while submitting this import")
                continue
            try:
                status = self.client.import_status(record["directory"], record["mailingList"], record["id"])
                self.stats.calls["import_status"] += 1
            except DestinationError as exc:
                self.stats.calls["import_status"] += 1
                if exc.retryable:
                    continue
                self._in_doubt(record, f"its status cannot be read: {exc.code}: {exc.message}")
                continue
            if status.get("status") == "complete":
                self._finished(record, status)
            elif status.get("status") == "failed":
                error = status.get("error") or {}
                self.stats.imports_failed += 1
                self._in_doubt(record, f"import {record['id']} failed as a whole: "
                                       f"{error.get('errorMessage') or error.get('errorCode') or 'no reason given'}")
        if len(self.checkpoint.data["imports"]) != imports:   # else nothing a resume needs changed: no rewrite
            self._save()
        self.on_progress(self)
        if block and self.checkpoint.data["imports"] and not self.stop.is_set():
            self.sleep(self.options.poll_seconds)

    def _finished(self, record: dict[str, Any], status: dict[str, Any]) -> None:
        items = self._stored_items(record)
        contacts = status.get("contacts")
        if not isinstance(contacts, dict):
            contacts = {}
        counts = contacts.get("count")
        if not isinstance(counts, dict):
            counts = {}
        errors: dict[int, str] = {}
        unprocessed = contacts.get("unprocessed") or []
        if unprocessed:
            summary = self._call("import_summary", self.client.import_status, record["directory"],
                                 record["mailingList"], record["id"], summary=True)
            for error in (summary.get("contacts") or {}).get("errors") or []:
                if isinstance(error, dict) and isinstance(error.get("index"), int):
                    code, text = error.get("errorCode") or "unprocessed", error.get("errorMessage") or ""
                    errors[error["index"]] = f"{code}: {text}"
            for index in unprocessed:
                if isinstance(index, int):
                    errors.setdefault(index, "unprocessed: Qualtrics gave no reason")
        processed = sum(int(counts.get(k) or 0) for k in ("added", "updated", "failed"))
        if processed == 0 and items:
            reason = (f"Qualtrics processed none of import {record['id']}'s contacts: does directory "
                      f"{record['directory']} hold mailing list {record['mailingList']}?")
            errors = dict.fromkeys(range(len(items)), reason)
        rejected = [items[i] for i in sorted(errors) if 0 <= i < len(items)]
        loaded = [item for i, item in enumerate(items) if i not in errors]
        self._write_rejects([Reject(i.line, f"Qualtrics: {errors[n]}", i.subscription, i.message_id)
                             for n, i in enumerate(items) if n in errors])
        self._settle(loaded, rejected, [])
        self.stats.contacts_added += int(counts.get("added") or 0)
        self.stats.contacts_updated += int(counts.get("updated") or 0)
        self.stats.contacts_loaded += len(loaded)
        self.stats.transactions_loaded += sum(1 for i in loaded if i.action == TRANSACTIONS)
        self.stats.imports_finished += 1
        self.checkpoint.data["imports"].remove(record)
        self._save()   # at once: a resume must not settle (and report) it again

    def _in_doubt(self, record: dict[str, Any], why: str) -> None:
        """The import may have applied some of its contacts: its items go to the queue lane, where the workers
        recover them (the transaction's marker is looked for before one is created)."""
        self.checkpoint.data["imports"].remove(record)
        wanted = {(item.line, item.subscription) for item in self._stored_items(record)}
        self._queue(self._to_queue(self._replan(wanted), why), None, uncertain=True)
        self._save()

    def _replan(self, wanted: set[tuple[int, str]]) -> list[Item]:
        """The items of these (line, subscription) pairs, planned again from the input (the checkpoint keeps
        no events): one pass over the input up to the last line wanted."""
        planner, last, found = self.planner_factory(), max(line for line, _ in wanted), []
        stream, raw = self.stream_factory()
        try:
            for record in records(stream, self.max_record_bytes):
                if record.number > last:
                    break
                if any(line == record.number for line, _ in wanted):
                    found += [i for i in planner.plan(record.number, record.data, record.problem).items
                              if (i.line, i.subscription) in wanted]
        finally:
            stream.close()
            raw.close()
        return found

    def _refused(self, record: dict[str, Any], items: list[Item], reason: str) -> None:
        self.checkpoint.data["imports"].remove(record)
        self._write_rejects([Reject(i.line, reason, i.subscription, i.message_id) for i in items])
        self._settle([], items, [])

    def _call(self, name: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A bookkeeping call: retried on transient errors until it answers or the run is stopped."""
        delay = 1.0
        while True:
            self.stats.calls[name] += 1
            try:
                return function(*args, **kwargs)
            except DestinationError as exc:
                if not exc.retryable or self.stop.is_set():
                    raise BackfillError(f"{name}: {exc.code}: {exc.message}") from None
                self.sleep(exc.retry_after or delay)
                delay = min(delay * 2, 30.0)

    # --- files ------------------------------------------------------------------------------------
    def _write_rejects(self, rejects: list[Reject]) -> None:
        if not rejects:
            return
        with open(self.rejects_path, "a", encoding="utf-8") as handle:
            for reject in rejects:
                handle.write(json.dumps(reject.to_json(), ensure_ascii=True) + "\n")
        self.stats.rejects += len(rejects)

    def _save(self) -> None:
        self.checkpoint.data["stats"] = self.stats.to_json()
        self.checkpoint.save()

    def _stored_items(self, record: dict[str, Any]) -> list[Item]:
        """An import's items as the checkpoint keeps them: enough to report, settle or queue them again."""
        items = []
        for line, index, message_id in record["items"]:
            name = record["subscriptions"][index]
            action = self.planner.subscriptions[name].action.slug
            key = QueueMessage(action, name, message_id, "", {}).idempotency_key
            items.append(Item(line, name, action, message_id, key, BULK, "", {}))
        return items

    # --- for the progress display ------------------------------------------------------------------
    def bytes_read(self) -> int:
        try:
            return self.raw.tell() if self.raw is not None and not self.raw.closed else 0
        except (OSError, ValueError):
            return 0

    def imports_running(self) -> int:
        return len(self._running())


