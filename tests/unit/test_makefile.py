"""The Makefile's first-run checks, run with make itself (no install happens in these cases)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_without_python_313_an_old_python3_stops_with_the_install_hint(tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "python3"   # a python3 that is 3.9: the code needs 3.11 or newer
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\n[ "$1" = "-V" ] && { echo "Python 3.9.18"; exit 0; }\nexit 1\n')
    fake.chmod(0o755)
    venv = tmp_path / "venv"
    done = subprocess.run(["make", f"VENV={venv}", "PY313_BIN=/nonexistent", f"{venv}/.requirements-dev.stamp"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"})
    assert done.returncode != 0
    assert "python3 is 3.9.18, too old" in done.stderr and "pyenv install 3.13" in done.stderr
    assert not venv.exists()
