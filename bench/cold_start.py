"""Cold-start cost of each function: the time to import its handler module (INIT), best of N runs, side by side
with the floor: a fresh process that imports boto3 and creates one client, in the same environment.

Each run is a fresh Python process with the function's environment, importing functions/<name>/app.py
the way Lambda's INIT phase does (module-level wiring included: config, subscriptions, boto3 clients).
The functions are the folders of functions/ that hold an app.py: ``ingest`` with the ingest's settings, any
other folder as a worker (``worker`` once per action slug, a per-action folder with its own slug). Runs of
the floor and of each function alternate, so a busy machine slows them alike; the ratio INIT / floor is
what the target is set on (at most 1.3). It also lists the heaviest imports from `python -X importtime`.

The package is measured from a fresh copy, twice: as SAM ships it today (bare .py: Lambda's file system is
read-only, so every cold start compiles our modules again and keeps nothing), and byte-compiled
(``compileall --invalidation-mode unchecked-hash``, what a layer build could ship). Third-party packages are
used as installed in the venv (pip byte-compiles them).

    .venv/bin/python bench/cold_start.py [--runs 5] [--top 6]
"""

from __future__ import annotations

import argparse
import compileall
import os
import py_compile
import re
import shutil
import subprocess
import sys
import tempfile
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
INGEST_ENV = {"INGEST_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:ingest",
              **{a.queue_variable: QUEUE + a.slug for a in ACTIONS.values()}}
WORKER_ENV = {"QUALTRICS_SECRET_ARN": "arn:aws:secretsmanager:::secret:q", "QUEUE_URL": QUEUE + "q",
              "DEAD_LETTER_QUEUE_URL": QUEUE + "d", "IDEMPOTENCY_TABLE": "t"}
FLOOR = "floor (boto3 + 1 client)"


def functions() -> dict[str, tuple[str, dict[str, str]]]:
    """label -> (folder, environment) for every functions/<folder>/app.py."""
    slugs = action_slugs()
    # A per-action folder is named after its slug: functions/add_contact_to_xmd runs addContactToXmd.
    by_folder = {re.sub(r"(?<!^)(?=[A-Z])", "_", slug).lower(): slug for slug in slugs}
    found: dict[str, tuple[str, dict[str, str]]] = {}
    for app in sorted((ROOT / "functions").glob("*/app.py")):
        folder = app.parent.name
        if folder == "ingest":
            found[folder] = (folder, INGEST_ENV)
        elif folder in by_folder:
            found[folder] = (folder, {**WORKER_ENV, "ACTION_SLUG": by_folder[folder]})
        else:   # one worker for every action (ACTION_SLUG): measured once per slug
            for slug in slugs:
                found[f"{folder} ({slug})"] = (folder, {**WORKER_ENV, "ACTION_SLUG": slug})
    return found


def action_slugs() -> list[str]:
    """The actions' slugs, from the package's action registry."""
    return list(ACTIONS)


# Each probe prints its wall time and its CPU time (ms): on a shared machine the CPU time varies far less.
PROBE = ("import time; t, c = time.perf_counter(), time.process_time(); import app; "
         "print((time.perf_counter() - t) * 1000, (time.process_time() - c) * 1000)")
# The floor: what any function using boto3 pays at least (the import and one client, as the ingest's SQS).
FLOOR_PROBE = ("import time; t, c = time.perf_counter(), time.process_time(); import boto3; boto3.client('sqs'); "
               "print((time.perf_counter() - t) * 1000, (time.process_time() - c) * 1000)")


def package_copies(where: Path) -> dict[str, Path]:
    """mode -> a folder holding a fresh copy of segment_qualtrics: "py" bare, "pyc" byte-compiled."""
    copies = {}
    for mode in ("py", "pyc"):
        copies[mode] = where / mode
        shutil.copytree(ROOT / "layers" / "common" / "segment_qualtrics", copies[mode] / "segment_qualtrics",
                        ignore=shutil.ignore_patterns("__pycache__"))
    compileall.compile_dir(copies["pyc"], quiet=1, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    return copies


def run(folder: str | None, environment: dict[str, str], extra: list[str], package: Path | None = None
        ) -> subprocess.CompletedProcess:
    """One fresh process: the function's app.py (or, for folder None, the floor) in that environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_", "PYTHON"))}
    env.update(COMMON_ENV, **environment)
    env["PYTHONDONTWRITEBYTECODE"] = "1"   # as on Lambda: nothing compiled at INIT is kept
    cwd = ROOT / "functions" / folder if folder else ROOT
    env["PYTHONPATH"] = os.pathsep.join([str(cwd), str(package or ROOT / "layers" / "common")])
    probe = PROBE if folder else FLOOR_PROBE
    return subprocess.run([sys.executable, *extra, "-c", probe], env=env, capture_output=True, text=True,
                          check=True, cwd=cwd)


def ms(result: subprocess.CompletedProcess) -> tuple[float, float]:
    """(wall ms, CPU ms) of one probe."""
    wall, cpu = result.stdout.strip().splitlines()[-1].split()
    return float(wall), float(cpu)


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
    with tempfile.TemporaryDirectory(prefix="cold-start-") as where:
        copies = package_copies(Path(where))
        times: dict[tuple[str, str], list[tuple[float, float]]] = {(FLOOR, ""): []}
        for _ in range(args.runs):   # side by side: one run of each, N times over
            times[(FLOOR, "")].append(ms(run(None, {}, [])))
            for label, (folder, environment) in measured.items():
                for mode, package in copies.items():
                    times.setdefault((label, mode), []).append(ms(run(folder, environment, [], package)))
        tops = {label: heaviest(run(folder, environment, ["-X", "importtime"], copies["py"]).stderr, args.top)
                for label, (folder, environment) in measured.items()}
    floor = min(wall for wall, _ in times[(FLOOR, "")])
    floor_cpu = min(cpu for _, cpu in times[(FLOOR, "")])
    print(f"Cold start (INIT) per function: import of app.py in a fresh process, {sys.version.split()[0]}, best of "
          f"{args.runs}, side by side with the floor (import boto3, create one client): {floor:.0f} ms wall, "
          f"{floor_cpu:.0f} ms CPU. CPU: the process's CPU time, steadier than wall time on a shared machine. "
          ".py: the package as shipped today; .pyc: byte-compiled.\n")
    print("| function | INIT ms (.py) | / floor | CPU / floor | INIT ms (.pyc) | / floor | CPU / floor "
          "| heaviest imports (.py, cumulative ms) |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for label in measured:
        cells = []
        for mode in copies:
            wall = min(w for w, _ in times[(label, mode)])
            cpu = min(c for _, c in times[(label, mode)])
            cells += [f"{wall:.0f}", f"{wall / floor:.2f}", f"{cpu / floor_cpu:.2f}"]
        top = ", ".join(f"{name} {cost:.0f}" for name, cost in tops[label] if name != "app")
        print(f"| {label} | " + " | ".join(cells) + f" | {top} |")

if __name__ == "__main__":
    main()
