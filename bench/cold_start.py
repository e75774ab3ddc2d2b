"""Cold-start cost of each function: the time to import its handler module (INIT), best of N runs.

Each run is a fresh Python process with the function's environment, importing functions/ingest/app.py or
(per action) functions/worker/app.py the way Lambda's INIT phase does (module-level wiring included: config,
subscriptions, boto3 clients).
It also lists the heaviest imports from `python -X importtime`.

    .venv/bin/python bench/cold_start.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "layers" / "common"))
from segment_qualtrics.destination.actions import ACTIONS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COMMON_ENV = {
    "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "POWERTOOLS_SERVICE_NAME": "segment-qualtrics",
    "POWERTOOLS_METRICS_NAMESPACE": "SegmentQualtrics", "POWERTOOLS_TRACE_DISABLED": "true",
    "QUALTRICS_DIRECTORY_ID": "POOL_BENCH", "QUALTRICS_MAILING_LIST_ID": "CG_BENCH",
    "QUALTRICS_STARTUP_CHECK": "false",
}
QUEUE = "http://127.0.0.1:9/123456789012/"
FUNCTIONS = {
    "ingest": {"INGEST_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:ingest",
               **{a.queue_variable: QUEUE + a.slug for a in ACTIONS.values()}},
}
for slug in ACTIONS:   # one worker handler (functions/worker) per action, ACTION_SLUG picks it
    FUNCTIONS[slug] = {"ACTION_SLUG": slug, "QUALTRICS_SECRET_ARN": "arn:aws:secretsmanager:::secret:q",
                       "QUEUE_URL": QUEUE + "q", "DEAD_LETTER_QUEUE_URL": QUEUE + "d", "IDEMPOTENCY_TABLE": "t"}

PROBE = "import time; t = time.perf_counter(); import app; print((time.perf_counter() - t) * 1000)"


def run(folder: str, extra: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_"))}
    env.update(COMMON_ENV, **FUNCTIONS[folder])
    code = ROOT / "functions" / ("ingest" if folder == "ingest" else "worker")
    env["PYTHONPATH"] = os.pathsep.join([str(code), str(ROOT / "layers" / "common")])
    return subprocess.run([sys.executable, *extra, "-c", PROBE], env=env, capture_output=True, text=True,
                          check=True, cwd=code)


def heaviest(stderr: str, top: int = 5) -> list[tuple[str, float]]:
    rows = []
    for line in stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if match and len(match.group(3)) == 3:   # what app.py imports directly
            rows.append((match.group(4), int(match.group(2)) / 1000))
    return sorted(rows, key=lambda r: -r[1])[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"Cold start (INIT) per function: import of app.py in a fresh process, {sys.version.split()[0]}, "
          f"best and median of {args.runs}\n")
    print("| function | best ms | median ms | heaviest imports of app.py (cumulative ms) |")
    print("|---|---:|---:|---|")
    for folder in FUNCTIONS:
        times = [float(run(folder, []).stdout.strip().splitlines()[-1]) for _ in range(args.runs)]
        top = heaviest(run(folder, ["-X", "importtime"]).stderr)
        print(f"| {folder} | {min(times):.0f} | {statistics.median(times):.0f} | "
              + ", ".join(f"{name} {ms:.0f}" for name, ms in top) + " |")


if __name__ == "__main__":
    main()
