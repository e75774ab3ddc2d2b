"""The backfill tool against the local stack: imports into the sandbox, the queue lane through the real workers,
rejects, a failed import, the live pipeline after a backfill, and a killed run resumed."""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import requests
from segment_qualtrics.tools import backfill

from local.stack import ROOT

DIRECTORY, LIST = "POOL_SANDBOX", "CG_SANDBOX"


def identify(n: int, **traits) -> dict:
    return {"type": "identify", "messageId": f"bf-id-{n}", "userId": f"cust-{n}",
            "traits": {"email": f"cust{n}@example.com", "firstName": f"C{n}", **traits},
            "timestamp": "2025-03-01T10:00:00Z"}


def purchase(n: int, order: int = 0) -> dict:
    return {"type": "track", "event": "Transaction Created", "messageId": f"bf-tx-{n}-{order}", "userId": f"cust-{n}",
            "properties": {"orderId": f"o-{n}-{order}", "total": 10 + n}, "timestamp": "2025-03-02T11:00:00Z"}


def write_events(path: Path, events: list, extra_lines: list[bytes] = ()) -> Path:
    data = b"".join(json.dumps(e).encode() + b"\n" for e in events) + b"".join(line + b"\n" for line in extra_lines)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def state_file(stack, tmp_path: Path) -> Path:
    queues = {n: stack.intrinsics.physical[n] for n, r in stack.resources.items() if r.get("Type") == "AWS::SQS::Queue"}
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"awsEndpointUrl": stack.endpoint_url, "sandboxUrl": stack.sandbox.base_url,
                                "queues": queues}))
    return path


def args(stack, tmp_path: Path, file: Path, *more: str) -> list[str]:
    workflow = f"{stack.sandbox.base_url}/inbound-event/v1/events/json/triggers?urlTokenId=backfill"
    return [str(file), "--state", str(state_file(stack, tmp_path)),
            "--config", str(ROOT / "local" / "subscriptions.json"),
            "--env", f"QUALTRICS_DIRECTORY_ID={DIRECTORY}", "--env", f"QUALTRICS_MAILING_LIST_ID={LIST}",
            "--env", f"QUALTRICS_WORKFLOW_URL={workflow}", "--contacts-mailing-list", LIST,
            "--poll-seconds", "0.05", "--json", "--no-progress", *more]


def run(argv: list[str]) -> tuple[int, dict, str]:
    out, err = io.StringIO(), io.StringIO()
    status = backfill.main(argv, out=out, err=err)
    text = out.getvalue()
    return status, (json.loads(text) if text.strip().startswith("{") else {}), err.getvalue()


def rejects_of(file: Path) -> list[dict]:
    path = file.with_name(file.name + ".rejects.ndjson")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def transactions_by_message(client) -> Counter:
    return Counter(t["data"].get("segmentMessageId") for t in client.transactions())


def test_backfill_loads_contacts_and_transactions_and_a_rerun_does_nothing(stack, client, tmp_path):
    events = [e for n in range(30) for e in (identify(n), purchase(n))]
    file = write_events(tmp_path / "events.ndjson.gz", events)
    status, summary, err = run(args(stack, tmp_path, file))
    assert status == 0, err
    assert summary["finished"] and summary["lines"] == 60 and summary["rejects"] == 0
    assert summary["contactsLoaded"] == 60 and summary["transactionsLoaded"] == 30
    assert summary["queued"] == {"triggerXflowWorkflow": 30}   # workflows have no bulk API
    stack.drain(timeout=300)
    assert len(client.contacts()) == 30
    assert transactions_by_message(client) == Counter({f"bf-tx-{n}-0": 1 for n in range(30)})
    assert len(client.workflow_runs()) == 30
    imports = client.qualtrics_requests("POST", "/transactioncontacts")
    assert len(imports) == 1 and len(imports[0]["body"]["contacts"]) == 60
    # Each transaction carries the live recovery marker and the event's date.
    transaction = next(t for t in client.transactions() if t["data"]["segmentMessageId"] == "bf-tx-3-0")
    assert transaction["data"]["segmentDeliveryKey"].startswith("seg")
    assert transaction["data"]["segmentTransactionDate"] == "2025-03-02 11:00:00"
    assert transaction["data"]["orderId"] == "o-3-0"

    status, summary, err = run(args(stack, tmp_path, file))
    assert status == 0 and "finished already" in err and "nothing to do" in err
    assert len(client.qualtrics_requests("POST", "/transactioncontacts")) == 1


def test_a_live_copy_after_the_backfill_is_recognised_not_duplicated(stack, client, tmp_path):
    file = write_events(tmp_path / "events.ndjson", [identify(1), purchase(1)])
    status, _, err = run(args(stack, tmp_path, file))
    assert status == 0, err
    stack.drain(timeout=300)
    assert transactions_by_message(client) == Counter({"bf-tx-1-0": 1})
    answer = client.post(purchase(1))   # the same Segment event, now through the live pipeline
    assert answer.status_code == 200
    stack.drain(timeout=300)
    assert transactions_by_message(client) == Counter({"bf-tx-1-0": 1})
    assert len(client.qualtrics_requests("POST", "/transactions")) == 0   # known done: no call at all


def test_bad_lines_are_rejected_with_their_line_and_reason_and_never_stop_the_run(stack, client, tmp_path):
    bad = [b"not json", b'{"type": "purchase", "messageId": "m"}', b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
           b'{"type": "identify", "userId": "\xff\xfe"}',
           b'{"type": "identify", "userId": "u", "n": 1e999}', b"{" + b" " * 3_000_000 + b"}", b"[1, 2]"]
    file = write_events(tmp_path / "events.ndjson", [identify(1)], bad + [json.dumps(purchase(1)).encode()])
    status, summary, err = run(args(stack, tmp_path, file, "--max-line-bytes", "2000000"))
    assert status == 0, err
    assert summary["invalidLines"] == len(bad) and summary["transactionsLoaded"] == 1
    rejects = rejects_of(file)
    assert [r["line"] for r in rejects] == list(range(2, 2 + len(bad)))
    assert "purchase" in rejects[1]["reason"] and "limit is 2000000" in rejects[5]["reason"]
    assert "too_deep" in rejects[2]["reason"] and "UTF-8" in rejects[3]["reason"]


def test_contacts_qualtrics_refuses_are_rejected_with_qualtrics_reason(stack, client, tmp_path):
    events = [identify(1), identify(2, email="not-an-email"), purchase(3), identify(4)]
    file = write_events(tmp_path / "events.ndjson", events)
    status, summary, err = run(args(stack, tmp_path, file))
    assert status == 0, err
    rejects = rejects_of(file)
    assert [(r["line"], r["subscription"]) for r in rejects] == [(2, "Create or update contact")]
    assert "INVALID_EMAIL" in rejects[0]["reason"] and "not-an-email" in rejects[0]["reason"]
    assert summary["rejects"] == 1 and summary["contactsLoaded"] == 3
    assert {c["extRef"] for c in client.contacts()} == {"cust-1", "cust-3", "cust-4"}


def test_an_import_that_fails_as_a_whole_goes_through_the_workers_without_duplicates(stack, client, tmp_path):
    events = [purchase(n) for n in range(20)]
    file = write_events(tmp_path / "events.ndjson", events)
    client.fault(pathPattern="/transactioncontacts$", method="POST", status=0, failImport="disk full",
                 failImportAtPercent=50)
    status, summary, err = run(args(stack, tmp_path, file))
    assert status == 0, err
    assert summary["imports"] == {"submitted": 1, "finished": 0, "failed": 1}
    assert summary["queued"]["upsertContactTransaction"] == 20
    assert len(client.transactions()) == 10   # the import applied half before it failed
    stack.drain(timeout=300)
    # The workers found the ten the import had written (their marker) and created the other ten.
    assert transactions_by_message(client) == Counter({f"bf-tx-{n}-0": 1 for n in range(20)})


def test_a_slow_import_answer_is_waited_for_not_taken_as_an_import_in_doubt(stack, client, tmp_path):
    # The 200,000-customer bench's 10,000 unexplained rejects: a loaded sandbox answered an import's POST after the
    # client's 10 s read timeout; the import was taken "in doubt" (its lines sent the per-event way, or rejected
    # without a queue) although it existed and completed. A 5 MB upload may take Qualtrics longer than a small call.
    events = [e for n in range(10) for e in (identify(n), purchase(n))]
    file = write_events(tmp_path / "events.ndjson", events)
    client.fault(pathPattern="/transactioncontacts$", method="POST", status=0, delaySeconds=11)
    status, summary, err = run(args(stack, tmp_path, file))
    assert status == 0, err
    assert rejects_of(file) == []
    assert summary["imports"] == {"submitted": 1, "finished": 1, "failed": 0}
    assert set(summary["queued"]) == {"triggerXflowWorkflow"}   # workflows are always queued; nothing else was
    assert summary["contactsLoaded"] == 20
    assert transactions_by_message(client) == Counter({f"bf-tx-{n}-0": 1 for n in range(10)})


def test_a_killed_run_resumes_and_loads_each_line_once(stack, client, tmp_path):
    requests.post(stack.sandbox.base_url + "/_sandbox/imports", json={"contactsPerSecond": 100}, timeout=5)
    events = [e for n in range(200) for e in (identify(n), purchase(n))]
    file = write_events(tmp_path / "events.ndjson", events)
    argv = args(stack, tmp_path, file, "--import-size", "60")
    command = [sys.executable, "-m", "segment_qualtrics.tools.backfill", *argv]
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'layers' / 'common'}:{ROOT}"}
    checkpoint = file.with_name(file.name + ".backfill-checkpoint.json")
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:   # kill it once two imports are submitted, the others not yet
        if checkpoint.exists():
            try:
                submitted = json.loads(checkpoint.read_text())["stats"].get("imports_submitted", 0)
            except ValueError:
                submitted = 0
            if submitted >= 2:
                break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL
    assert not json.loads(checkpoint.read_text())["finished"]

    status, summary, err = run(argv)
    assert status == 0, err
    assert "resuming" in err
    stack.drain(timeout=300)
    assert sorted(c["extRef"] for c in client.contacts()) == sorted(f"cust-{n}" for n in range(200))
    assert transactions_by_message(client) == Counter({f"bf-tx-{n}-0": 1 for n in range(200)})
    imported = sum(len(r["body"]["contacts"]) for r in client.qualtrics_requests("POST", "/transactioncontacts"))
    assert imported == 400   # no line submitted twice
    assert rejects_of(file) == []


def test_ctrl_c_stops_at_a_checkpoint_and_the_same_command_resumes(stack, client, tmp_path):
    requests.post(stack.sandbox.base_url + "/_sandbox/imports", json={"contactsPerSecond": 50}, timeout=5)
    file = write_events(tmp_path / "events.ndjson", [purchase(n) for n in range(200)])
    argv = args(stack, tmp_path, file, "--import-size", "50")
    command = [sys.executable, "-m", "segment_qualtrics.tools.backfill", *argv]
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'layers' / 'common'}:{ROOT}"}
    checkpoint = file.with_name(file.name + ".backfill-checkpoint.json")
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (
            checkpoint.exists() and '"imports_submitted":1' in checkpoint.read_text()):
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert "run the same command again to resume" in err
    assert json.loads(out)["finished"] is False

    status, summary, err = run(argv)
    assert status == 0, err
    assert transactions_by_message(client) == Counter({f"bf-tx-{n}-0": 1 for n in range(200)})


def test_a_corrupt_gzip_stream_loads_what_came_before_and_says_where_it_broke(stack, client, tmp_path):
    data = gzip.compress(b"".join(json.dumps(purchase(n)).encode() + b"\n" for n in range(400)))
    file = tmp_path / "events.ndjson.gz"
    file.write_bytes(data[: len(data) * 2 // 3])   # cut short: the stream ends inside a deflate block
    status, summary, err = run(args(stack, tmp_path, file))
    assert status == 1 and "gzip stream is corrupt" in err
    loaded = summary["transactionsLoaded"]
    assert 0 < loaded < 400 and summary["finished"] is False
    assert transactions_by_message(client) == Counter({f"bf-tx-{n}-0": 1 for n in range(loaded)})


def test_claim_many_keeps_the_claim_protocol_for_every_state_of_a_key(stack):
    from segment_qualtrics.delivery.idempotency import ClaimState
    from segment_qualtrics.tools.backfill_store import BulkIdempotencyStore

    store = BulkIdempotencyStore(stack.client("dynamodb"), "IdempotencyTable")
    store.complete("done")
    store.claim("leased", 600)
    store.claim("expired", 600)
    store.release("expired", uncertain=True)   # a worker failed after it may have reached Qualtrics
    keys = ["done", "leased", "expired"] + [f"new-{n}" for n in range(150)]   # two TransactWriteItems
    claims = store.claim_many(keys, 600)
    assert claims[0].state is ClaimState.DONE and claims[1].state is ClaimState.BUSY
    assert claims[2].state is ClaimState.CLAIMED and claims[2].recovering
    assert all(c.state is ClaimState.CLAIMED and not c.recovering for c in claims[3:])
    assert store.claim("new-7", 600).state is ClaimState.BUSY   # leased to the backfill now
    store.complete_many([f"new-{n}" for n in range(150)])
    assert {c.state for c in store.claim_many([f"new-{n}" for n in range(150)], 600)} == {ClaimState.DONE}
