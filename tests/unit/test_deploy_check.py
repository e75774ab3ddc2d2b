"""`make deploy` checks the subscriptions file it packages, with the deploy's parameters, before sam runs.

The make target runs in a copy of the repository's deploy inputs (template.yaml, samconfig.toml, the packaged
subscriptions file) with a fake `sam` that records its calls: nothing reaches AWS.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from local.deploy_check import PACKAGED, main

ROOT = Path(__file__).resolve().parents[2]
GOOD = json.loads((ROOT / PACKAGED).read_text())
BROKEN = {"subscriptions": [
    GOOD["subscriptions"][0],
    {"name": "Broken", "actionSlug": "addContactToXmd", "trigger": 'type = "track"', "mapping": {"directoryId": None}},
]}
SAMCONFIG = """version = 0.1
[default.global.parameters]
stack_name = "segment-qualtrics-test"
[default.deploy.parameters]
region = "us-east-1"
parameter_overrides = "QualtricsMaxConcurrency=2 QualtricsBaseUrl=\\"\\" {extra}"
"""


def repo(tmp_path: Path, subscriptions: dict, extra: str = "QualtricsDirectoryId=POOL_DEPLOY",
         template: str | None = None) -> Path:
    """A folder holding what `make deploy` reads: template.yaml, samconfig.toml and the packaged file."""
    root = tmp_path / "repo"
    (root / PACKAGED).parent.mkdir(parents=True)
    (root / PACKAGED).write_text(json.dumps(subscriptions))
    (root / "template.yaml").write_text(template or (ROOT / "template.yaml").read_text())
    (root / "samconfig.toml").write_text(SAMCONFIG.format(extra=extra))
    return root


def check(root: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(["--root", str(root), *args], out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def test_the_packaged_file_passes_with_the_deploys_parameters(tmp_path):
    status, out, err = check(repo(tmp_path, GOOD))
    assert status == 0, err
    assert "IngestFunction, AddContactToXmdFunction" in out and "no problems" in out


def test_a_subscription_with_problems_stops_the_deploy_with_every_problem_listed(tmp_path):
    status, _, err = check(repo(tmp_path, BROKEN))
    assert status == 1
    assert "subscriptions[1] ('Broken'): the required field 'directoryId' has no mapping" in err
    assert "nothing was deployed" in err


def test_the_variables_come_from_the_environments_parameter_overrides(tmp_path):
    # Without QualtricsDirectoryId (no default) the packaged file's ${QUALTRICS_DIRECTORY_ID} has no value:
    # the deploy would start functions that switch both contact subscriptions off.
    status, _, err = check(repo(tmp_path, GOOD, extra=""))
    assert status == 1
    assert "QUALTRICS_DIRECTORY_ID is not set" in err
    assert "add QualtricsDirectoryId=..." in err and "[default.deploy.parameters]" in err
    # A fixed value that does not fit its field, from a parameter: checked as the function would see it.
    workflow = {"subscriptions": [{**GOOD["subscriptions"][2], "enabled": True}]}
    status, _, err = check(repo(tmp_path / "w", workflow, extra="QualtricsDirectoryId=POOL_1"))
    assert status == 1 and "workflowUrl" in err and "empty string" in err


def test_a_destination_config_in_the_layer_is_the_file_checked(tmp_path):
    template = (ROOT / "template.yaml").read_text().replace(
        'DESTINATION_CONFIG: ""', "DESTINATION_CONFIG: /opt/python/segment_qualtrics/prod.json")
    assert "/opt/python/segment_qualtrics/prod.json" in template
    root = repo(tmp_path, GOOD, template=template)
    (root / "layers/common/segment_qualtrics/prod.json").write_text(json.dumps(BROKEN))
    status, out, err = check(root)
    assert status == 1 and "prod.json" in out and "'Broken'" in err
    # a path the package does not hold: say so, and how to name the local file
    elsewhere = template.replace("/opt/python/segment_qualtrics/prod.json", "/mnt/efs/subscriptions.json")
    status, _, err = check(repo(tmp_path / "e", GOOD, template=elsewhere))
    assert status == 2 and "CONFIG=path" in err
    status, _, err = check(repo(tmp_path / "f", GOOD, template=elsewhere), "--config", str(ROOT / PACKAGED))
    assert status == 0, err


def test_an_environment_missing_from_samconfig_is_a_usage_error(tmp_path):
    status, _, err = check(repo(tmp_path, GOOD), "--config-env", "prod")
    assert status == 2 and "[prod.deploy.parameters]" in err


# --- the make target ---------------------------------------------------------------------------------

def make_deploy(tmp_path: Path, root: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    calls = tmp_path / "sam-calls"
    sam = tmp_path / "bin" / "sam"
    sam.parent.mkdir()
    sam.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    sam.chmod(0o755)
    python313 = tmp_path / "bin" / "python3.13"   # sam.mk's build checks that one exists
    python313.write_text("#!/bin/sh\nexit 0\n")
    python313.chmod(0o755)
    stamp = tmp_path / "sam.stamp"
    stamp.touch()
    (root / "local").symlink_to(ROOT / "local")   # `python -m local.deploy_check` runs from the repository root
    make = shutil.which("make")
    assert make, "make is needed to run the deploy target"
    result = subprocess.run(
        [make, "--no-print-directory", "-C", str(root), "-f", str(ROOT / "mk" / "sam.mk"),
         "-f", str(ROOT / "mk" / "ops.mk"), "deploy",
         f"SAM={sam}", f"SAM_STAMP={stamp}", f"PY313_BIN={sam.parent}", f"PY={sys.executable}"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "MAKEFLAGS": ""})
    return result, calls.read_text().splitlines() if calls.exists() else []


def test_make_deploy_stops_before_sam_on_a_file_with_problems(tmp_path):
    result, sam_calls = make_deploy(tmp_path, repo(tmp_path, BROKEN))
    assert result.returncode != 0
    assert "the required field 'directoryId' has no mapping" in result.stderr
    assert sam_calls == []   # neither sam build nor sam deploy ran


def test_make_deploy_runs_sam_after_a_clean_check(tmp_path):
    result, sam_calls = make_deploy(tmp_path, repo(tmp_path, GOOD))
    assert result.returncode == 0, result.stderr
    assert [call.split()[0] for call in sam_calls] == ["build", "deploy"]
    assert sam_calls[1] == "deploy --config-env default"
    assert "no problems" in result.stdout


def test_make_deploy_refuses_an_unknown_environment_before_anything(tmp_path):
    root, env = repo(tmp_path, GOOD), "nope"
    result = subprocess.run(["make", "--no-print-directory", "-C", str(root), "-f", str(ROOT / "mk" / "ops.mk"),
                             "deploy-check", f"ENV={env}", f"PY={sys.executable}"],
                            capture_output=True, text=True, timeout=60, env={**os.environ, "MAKEFLAGS": ""})
    assert result.returncode != 0 and f"no [{env}.deploy.parameters]" in result.stderr
