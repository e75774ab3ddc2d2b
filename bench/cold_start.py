"""Cold-start cost of each function: the time to import its handler module (INIT), best of N runs, side by side
with the floor: a fresh process that imports boto3 and creates one client, in the same environment.

Each run is a fresh Python process with the function's environment, importing functions/<name>/app.py
the way Lambda's INIT phase does (module-level wiring included: config, subscriptions, boto3 clients).
The functions are the folders of functions/ that hold an app.py: ``ingest`` with the ingest's settings, any
other folder as a worker (``worker`` once per action slug, a per-action folder with its own slug). Runs of
the floor and of each function alternate, so a busy machine slows them alike; the ratio INIT / floor is
what the target is set on (at most 1.3). It also lists the heaviest imports from `python -X importtime`.

    .venv/bin/python bench/cold_start.py [--runs 5] [--top 6]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMON_ENV = {
    "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "POWERTOOLS_SERVICE_NAME": "segment-qualtrics",
    "POWERTOOLS_METRICS_NAMESPACE": "SegmentQualtrics", "POWERTOOLS_TRACE_DISABLED": "true",
    "QUALTRICS_DIRECTORY_ID": "POOL_BENCH", "QUALTRICS_MAILING_LIST_ID": "CG_BENCH",
    "QUALTRICS_STARTUP_CHECK": "false",
}
QUEUE = "http://127.0.0.1:9/123456789012/"
INGEST_ENV = {"INGEST_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:ingest",
              "ADD_CONTACT_TO_XMD_QUEUE_URL": QUEUE + "a", "UPSERT_CONTACT_TRANSACTION_QUEUE_URL": QUEUE + "u",
              "TRIGGER_XFLOW_WORKFLOW_QUEUE_URL": QUEUE + "t"}
WORKER_ENV = {"QUALTRICS_SECRET_ARN": "arn:aws:secretsmanager:::secret:q", "QUEUE_URL": QUEUE + "q",
              "DEAD_LETTER_QUEUE_URL": QUEUE + "d", "IDEMPOTENCY_TABLE": "t"}
# The per-action folders of today (functions/add_contact_to_xmd, ...) and the slug each runs.
SLUGS = {"add_contact_to_xmd": "addContactToXmd", "upsert_contact_transaction": "upsertContactTransaction",
         "trigger_xflow_workflow": "triggerXflowWorkflow"}
FLOOR = "floor (boto3 + 1 client)"


def functions() -> dict[str, tuple[str, dict[str, str]]]:
    """label -> (folder, environment) for every functions/<folder>/app.py."""
    found: dict[str, tuple[str, dict[str, str]]] = {}
    for app in sorted((ROOT / "functions").glob("*/app.py")):
        folder = app.parent.name
        if folder == "ingest":
            found[folder] = (folder, INGEST_ENV)
        elif folder in SLUGS:
            found[folder] = (folder, {**WORKER_ENV, "ACTION_SLUG": SLUGS[folder]})
        else:   # one worker for every action (ACTION_SLUG): measured once per slug
            for slug in SLUGS.values():
                found[f"{folder} ({slug})"] = (folder, {**WORKER_ENV, "ACTION_SLUG": slug})
    return found


PROBE = "import time; t = time.perf_counter(); import app; print((time.perf_counter() - t) * 1000)"
# The floor: what any function using boto3 pays at least (the import and one client, as the ingest's SQS).
FLOOR_PROBE = ("import time; t = time.perf_counter(); import boto3; boto3.client('sqs'); "
               "print((time.perf_counter() - t) * 1000)")


def run(folder: str | None, environment: dict[str, str], extra: list[str]) -> subprocess.CompletedProcess:
    """One fresh process: the function's app.py (or, for folder None, the floor) in that environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_"))}
    env.update(COMMON_ENV, **environment)
    cwd = ROOT / "functions" / folder if folder else ROOT
    env["PYTHONPATH"] = os.pathsep.join([str(cwd), str(ROOT / "layers" / "common")])
    probe = PROBE if folder else FLOOR_PROBE
    return subprocess.run([sys.executable, *extra, "-c", probe], env=env, capture_output=True, text=True,
                          check=True, cwd=cwd)


def ms(result: subprocess.CompletedProcess) -> float:
    return float(result.stdout.strip().splitlines()[-1])


def heaviest(stderr: str, top: int) -> list[tuple[str, float]]:
    """The costliest imports, by their own time plus that of what they import that nothing imported before."""
    rows = []
    for line in stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if match and len(match.group(3)) <= 5:   # what app.py imports, and what those import
            rows.append((match.group(4), int(match.group(2)) / 1000))
    return sorted(rows, key=lambda r: -r[1])[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--top", type=int, default=6, help="how many of the heaviest imports to list")
    args = parser.parse_args()
    measured = functions()
    times: dict[str, list[float]] = {label: [] for label in [FLOOR, *measured]}
    for _ in range(args.runs):   # side by side: one run of each, N times over
        times[FLOOR].append(ms(run(None, {}, [])))
        for label, (folder, environment) in measured.items():
            times[label].append(ms(run(folder, environment, [])))
    floor = min(times[FLOOR])
    print(f"Cold start (INIT) per function: import of app.py in a fresh process, {sys.version.split()[0]}, "
          f"best and median of {args.runs}, side by side with the floor (import boto3, create one client)\n")
    print("| function | INIT best ms | median ms | floor best ms | INIT / floor | heaviest imports (cumulative ms) |")
    print("|---|---:|---:|---:|---:|---|")
    print(f"| {FLOOR} | {floor:.0f} | {statistics.median(times[FLOOR]):.0f} | {floor:.0f} | 1.00 | |")
    for label, (folder, environment) in measured.items():
        best = min(times[label])
        top = heaviest(run(folder, environment, ["-X", "importtime"]).stderr, args.top)
        print(f"| {label} | {best:.0f} | {statistics.median(times[label]):.0f} | {floor:.0f} | {best / floor:.2f} | "
              + ", ".join(f"{name} {cost:.0f}" for name, cost in top) + " |")


if __name__ == "__main__":
    main()
