"""The backfill command line without a stack: the dry run, and what it refuses before touching anything."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pytest
from segment_qualtrics.tools import backfill

ROOT = Path(__file__).resolve().parents[2]
ENV = ["--config", str(ROOT / "local" / "subscriptions.json"), "--env", "QUALTRICS_DIRECTORY_ID=POOL_1",
       "--env", "QUALTRICS_MAILING_LIST_ID=CG_1",
       "--env", "QUALTRICS_WORKFLOW_URL=https://iad1.qualtrics.com/inbound-event/v1/events/json/triggers?urlTokenId=x"]


def events_file(tmp_path: Path) -> Path:
    events = [{"type": "identify", "messageId": f"i{n}", "userId": f"u{n}", "traits": {"email": f"u{n}@x.io"}}
              for n in range(3)]
    events += [{"type": "track", "event": "Transaction Created", "messageId": f"t{n}", "userId": f"u{n}",
                "properties": {"total": n}} for n in range(3)]
    path = tmp_path / "events.ndjson.gz"
    path.write_bytes(gzip.compress(b"\n".join(json.dumps(e).encode() for e in events) + b"\nnot json\n"))
    return path


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return backfill.main(argv, out=out, err=err, environ={}), out.getvalue(), err.getvalue()


def test_dry_run_reads_everything_and_sends_nothing(tmp_path):
    file = events_file(tmp_path)
    status, out, err = run([str(file), *ENV, "--contacts-mailing-list", "CG_1", "--dry-run", "--json"])
    assert status == 0, err
    summary = json.loads(out)
    assert summary["lines"] == 7 and summary["invalidLines"] == 1 and summary["rejects"] == 1
    assert summary["matched"] == {"Create or update contact": 3, "Upsert contact transaction": 3,
                                  "Start workflow": 3}
    [batch] = summary["imports"]
    assert (batch["directory"], batch["mailingList"], batch["contacts"]) == ("POOL_1", "CG_1", 6)
    assert "segmentDeliveryKey" in batch["transactionFields"]
    assert summary["queued"] == {"triggerXflowWorkflow": 3}
    assert summary["firstRejects"] == [{"line": 7, "reason": "a record must be one JSON object (a Segment event)"}]
    assert not list(tmp_path.glob("*checkpoint*")) and not list(tmp_path.glob("*rejects*"))


def test_dry_run_text_names_the_first_payloads(tmp_path):
    status, out, _ = run([str(events_file(tmp_path)), *ENV, "--dry-run", "--subscription", "Create or update contact"])
    assert status == 0
    assert "nothing sent" in out and "queue addContactToXmd" in out   # no mailing list: contacts are queued


@pytest.mark.parametrize(("extra", "message"), [
    (["--lane", "triggerXflowWorkflow=bulk"], "no bulk API"),
    (["--lane", "addContactToXmd=bulk"], "needs --contacts-mailing-list"),
    (["--lane", "nope=queue"], "--lane wants ACTION=bulk|queue"),
    (["--subscription", "Nope"], "no enabled subscription of that name"),
    (["--env", "BROKEN"], "--env wants NAME=VALUE"),
])
def test_bad_options_are_refused_with_the_reason(tmp_path, extra, message):
    status, _, err = run([str(events_file(tmp_path)), *ENV, "--dry-run", *extra])
    assert status == 1 and message in err


def test_a_missing_input_or_local_stack_is_a_clear_error(tmp_path):
    status, _, err = run([str(tmp_path / "absent.ndjson"), *ENV])
    assert status == 1 and "no such file" in err
    status, _, err = run([str(events_file(tmp_path)), *ENV, "--state", str(tmp_path / "state.json")])
    assert status == 1 and "start the local stack" in err
