"""The AWS-facing tools (make dlq --stack, make smoke, make check-qualtrics) explain AWS failures in one line.

boto3 points at nothing (no credentials, no configuration) or at the local stack's moto server: no stubs.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from segment_qualtrics.adapters.aws_errors import explain, region_from_arn, samconfig_region
from segment_qualtrics.tools import cli

from local.stack import LocalStack

# Inside `make test` (MAKELEVEL set), a sub-make would print "Entering directory" on stdout, which a user's
# shell never sees; the stamp is left alone (the venv is the one running the tests).
MAKE = ("make", "--no-print-directory", "-o", ".venv/.requirements-dev.stamp")
ROOT = Path(__file__).resolve().parents[2]
ARN = "arn:aws:secretsmanager:eu-central-1:123456789012:secret:QualtricsSecret-AbCdEf"


@pytest.fixture
def no_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No credentials, no region, no config files, no instance metadata: a laptop that never ran `aws configure`."""
    for name in list(os.environ):
        if name.startswith("AWS_") or name in ("QUALTRICS_API_TOKEN", "QUALTRICS_DATACENTER", "SAMCONFIG_ENV"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.chdir(tmp_path)   # no samconfig.toml here
    return tmp_path


@pytest.fixture
def moto_aws(no_aws: Path, stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AWS_ENDPOINT_URL", stack.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return no_aws


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = cli.main(list(argv), out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("argv", [
    ("dlq", "list", "--stack", "segment-qualtrics", "--region", "us-east-1"),
    ("smoke", "--stack", "segment-qualtrics", "--region", "us-east-1"),
    ("check-qualtrics", "--stack", "segment-qualtrics", "--region", "us-east-1"),
    ("check-qualtrics", "--secret-arn", ARN),   # the region comes from the ARN
])
def test_no_credentials_is_one_line(no_aws: Path, argv) -> None:
    status, out, err = run(*argv)
    assert status == 1 and out == ""
    assert "no AWS credentials found" in one_line(err) and "aws configure" in err


def test_no_region_anywhere_is_one_line(no_aws: Path) -> None:
    status, _, err = run("dlq", "list", "--stack", "segment-qualtrics")
    assert status == 1 and "no AWS region" in one_line(err)


def test_the_region_comes_from_samconfig(moto_aws: Path) -> None:
    (moto_aws / "samconfig.toml").write_text('version = 0.1\n[default.deploy.parameters]\nregion = "eu-west-3"\n'
                                             '[prod.deploy.parameters]\nregion = "ap-south-1"\n')
    status, _, err = run("dlq", "list", "--stack", "no-such-stack")
    line = one_line(err)
    assert status == 1 and "stack 'no-such-stack' not found in eu-west-3" in line
    assert samconfig_region("prod") == "ap-south-1" and samconfig_region("absent") is None


def test_stack_not_found_is_one_line(moto_aws: Path) -> None:
    for command in (("dlq", "list"), ("smoke",), ("check-qualtrics",)):
        status, _, err = run(*command, "--stack", "no-such-stack", "--region", "us-west-2")
        assert status == 1 and "stack 'no-such-stack' not found in us-west-2" in one_line(err), command


def test_a_secret_without_a_value_says_to_set_it(moto_aws: Path) -> None:
    secrets = boto3.client("secretsmanager", region_name="eu-central-1")
    arn = secrets.create_secret(Name="QualtricsSecretNotSet")["ARN"]   # created by the stack, never set
    assert region_from_arn(arn) == "eu-central-1"
    status, _, err = run("check-qualtrics", "--secret-arn", arn)
    line = one_line(err)
    assert status == 1 and "has no value yet: set it" in line and arn in line
    status, _, err = run("check-qualtrics", "--secret-arn", ARN)   # no such secret at all
    assert status == 1 and "not found in eu-central-1" in one_line(err)


@pytest.mark.parametrize(("code", "expected"), [
    ("AccessDenied", "access denied for DescribeStacks in us-east-1"),
    ("AccessDeniedException", "access denied for DescribeStacks in us-east-1"),
    ("ExpiredToken", "credentials have expired"),
    ("InvalidClientTokenId", "AWS rejected the credentials"),
    ("Throttling", "AWS DescribeStacks failed in us-east-1: Throttling: slow down"),
])
def test_client_errors_say_what_to_do(code: str, expected: str) -> None:
    # The shape botocore raises for an AWS error answer (moto does not enforce IAM, so it cannot deny).
    exc = ClientError({"Error": {"Code": code, "Message": "slow down"}}, "DescribeStacks")
    assert expected in explain(exc, stack="s", region="us-east-1")


def test_make_dlq_json_is_json_alone_on_stdout(stack: LocalStack, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"awsEndpointUrl": stack.endpoint_url,
                                 "queues": {n: stack.queue_url(n) for n in stack.resources
                                            if stack.resources[n].get("Type") == "AWS::SQS::Queue"}}))
    done = subprocess.run([*MAKE, "dlq",
                           f"ARGS=list --json --state {state}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
