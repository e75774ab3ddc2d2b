"""The package is installed from pyproject.toml, and the venv runs the layer's lock (layers/common/requirements.txt)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata, resources
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "layers" / "common" / "requirements.txt"
DIRECT = ROOT / "layers" / "common" / "requirements.in"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\$", re.MULTILINE)


def locked() -> dict[str, str]:
    return {name.lower(): version for name, version in PIN.findall(LOCK.read_text())}


def direct() -> dict[str, Requirement]:
    lines = [line.strip() for line in DIRECT.read_text().splitlines()]
    return {(r := Requirement(line)).name.lower(): r for line in lines if line and not line.startswith("#")}


def test_every_locked_requirement_is_pinned_and_hashed():
    # one entry: a requirement line and its indented continuation lines (hashes, "# via" comments)
    requirements = re.findall(r"^[^#\s].*(?:\n\s.*)*", LOCK.read_text(), re.MULTILINE)
    assert len(requirements) == len(locked()) >= 15   # the transitive closure, not the direct list
    for entry in requirements:
        assert PIN.match(entry), entry.splitlines()[0]
        assert "--hash=sha256:" in entry, f"no hash for {entry.splitlines()[0]}"


def test_the_lock_holds_each_direct_requirement_at_its_version():
    lock = locked()
    for name, requirement in direct().items():
        assert name in lock, f"{name} is in requirements.in but not in the lock: run make lock"
        assert requirement.specifier.contains(lock[name]), f"{name}: lock {lock[name]} vs {requirement}: make lock"


def test_the_venv_runs_the_locked_versions():
    # The dev tools are installed after the lock: none of them may have moved a version the layer ships.
    moved = {name: (version, metadata.version(name)) for name, version in locked().items()
             if metadata.version(name) != version}
    assert moved == {}, f"(locked, installed): {moved}"


def test_pyprojects_dependencies_are_satisfied_by_the_lock():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lock = locked()
    names = set()
    for line in project["dependencies"]:
        requirement = Requirement(line)
        names.add(requirement.name.lower())
        assert requirement.specifier.contains(lock[requirement.name.lower()]), line
    assert names == set(direct()), "pyproject.toml and requirements.in name the same runtime dependencies"


def test_the_package_is_installed_with_its_data_and_its_command():
    distribution = metadata.distribution("segment-qualtrics-destination")
    scripts = {e.name: e.value for e in distribution.entry_points if e.group == "console_scripts"}
    assert scripts == {"segment-qualtrics": "segment_qualtrics.tools.cli:main"}
    packaged = resources.files("segment_qualtrics.destination") / "default_subscriptions.json"
    assert packaged.is_file()
    # importable without the layer on PYTHONPATH (the pytest config no longer adds it)
    done = subprocess.run([sys.executable, "-c", "import segment_qualtrics.destination.subscriptions as s; "
                           "print(s.DEFAULT_CONFIG)"], cwd="/", capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == ROOT / "layers/common/segment_qualtrics/destination/default_subscriptions.json"
