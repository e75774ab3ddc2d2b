"""What an AWS failure means for the operator, in one line, and where the region comes from.

The command-line tools (segment-qualtrics dlq, smoke, check-qualtrics) turn botocore's exceptions into one line
that says what is wrong and what to do, instead of a traceback. No AWS call here: pure functions over the exception
and the files.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    TokenRetrievalError,
)

_ARN_REGION = re.compile(r"^arn:aws[a-z-]*:[a-z0-9-]+:([a-z]{2}(?:-[a-z]+)+-\d):")
_CREDENTIALS_REJECTED = {"InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch",
                         "InvalidSignatureException", "AuthFailure"}
_EXPIRED = {"ExpiredToken", "ExpiredTokenException", "RequestExpired"}
_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError"}
CREDENTIALS_HINT = "run `aws configure` or `aws sso login`, or set AWS_PROFILE (or AWS_ACCESS_KEY_ID/SECRET)"


def region_from_arn(arn: str | None) -> str | None:
    match = _ARN_REGION.match(arn or "")
    return match.group(1) if match else None


def samconfig_region(environment: str | None = None, path: str | Path = "samconfig.toml") -> str | None:
    """The region samconfig.toml deploys the environment to ([ENV.deploy.parameters] or [ENV.global.parameters])."""
    try:
        config = tomllib.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    env = config.get(environment or os.environ.get("SAMCONFIG_ENV") or "default")
    if not isinstance(env, dict):
        return None
    for command in ("deploy", "global"):
        region = ((env.get(command) or {}).get("parameters") or {}).get("region")
        if isinstance(region, str) and region:
            return region
    return None


def configured_region() -> str | None:
    """The region boto3 would use by itself (AWS_REGION, AWS_DEFAULT_REGION, the profile's config)."""
    import boto3

    try:
        return boto3.session.Session().region_name
    except BotoCoreError:   # a broken config file: treat as none, the call explains what is wrong
        return None


def pick_region(given: str | None, arn: str | None = None) -> str | None:
    """--region, else the region of the ARN at hand, else AWS configuration, else samconfig.toml's."""
    return given or region_from_arn(arn) or configured_region() or samconfig_region()


def explain(exc: BaseException, *, stack: str | None = None, secret: str | None = None,
            region: str | None = None) -> str:
    """One line: what went wrong with AWS and what to do about it."""
    where = f" in {region}" if region else ""
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return f"no AWS credentials found: {CREDENTIALS_HINT}"
    if isinstance(exc, TokenRetrievalError):
        return "the AWS SSO session has expired: run `aws sso login` (with the same AWS_PROFILE)"
    if isinstance(exc, NoRegionError):
        return "no AWS region: pass REGION=... (--region), set AWS_REGION, or deploy with samconfig.toml's region"
    if isinstance(exc, EndpointConnectionError):
        return f"cannot reach AWS{where} ({exc.kwargs.get('endpoint_url', 'endpoint')}): check the region and network"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "")), str(error.get("Message", ""))
        operation = getattr(exc, "operation_name", "") or "the call"
        if code in _EXPIRED:
            return f"the AWS credentials have expired: refresh them ({CREDENTIALS_HINT})"
        if code in _CREDENTIALS_REJECTED:
            return f"AWS rejected the credentials ({code}): {CREDENTIALS_HINT}"
        if code in _DENIED:
            return (f"access denied for {operation}{where}: the AWS identity in use lacks that permission; use a "
                    "role or profile that has it (AWS_PROFILE=...)")
        if code == "ValidationError" and "does not exist" in message and stack:
            return (f"stack {stack!r} not found{where}: check STACK (samconfig.toml's stack_name) and REGION "
                    "(the region you deployed to)")
        if code == "ResourceNotFoundException" and ("secret value" in message or "AWSCURRENT" in message):
            return (f"secret {secret or ''} has no value yet: set it (README: set the secrets after the first "
                    "deploy), then run this again").replace("secret  ", "the secret ")
        if code == "ResourceNotFoundException":
            return f"{secret or 'the resource'} not found{where}: check the ARN or the stack and REGION"
        return f"AWS {operation} failed{where}: {code}: {' '.join(message.split())[:200]}"
    return f"AWS call failed: {type(exc).__name__}: {exc}"
