"""Post-deploy checks: ``segment-qualtrics <smoke|check-qualtrics>`` (tools/cli.py).

smoke            POST one signed test event to the webhook and report the HTTP answer.
                 URL and shared secret: --url and SEGMENT_SHARED_SECRET (or --secret), else the outputs and the
                 ingest secret of --stack, else the local stack's state file. The default event is an identify
                 for user "segment-qualtrics-smoke-test": the default subscription creates or updates that one
                 contact. ``--event track`` sends a track event no default trigger matches (no Qualtrics call).
check-qualtrics  GET /API/v3/whoami with the Qualtrics credentials: QUALTRICS_API_TOKEN and QUALTRICS_DATACENTER,
                 or the secret of --secret-arn, or the QualtricsSecretArn output of --stack. QUALTRICS_BASE_URL
                 (or --base-url) replaces https://{datacenter}.qualtrics.com. Warns when meta.notice says the
                 datacenter is not the brand's.

Secrets are read from the environment or Secrets Manager and never printed. Exit status: 0 fine, 1 not.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

import requests
from botocore.exceptions import BotoCoreError, ClientError

from segment_qualtrics.adapters.aws_errors import explain, pick_region
from segment_qualtrics.adapters.health import check_whoami
from segment_qualtrics.adapters.qualtrics import QualtricsClient, QualtricsCredentials
from segment_qualtrics.destination.errors import DestinationError
from segment_qualtrics.tools.dlq import DlqError, read_state
from segment_qualtrics.tools.dlq_commands import DEFAULT_STATE, resolve_target

SMOKE_USER = "segment-qualtrics-smoke-test"


def smoke_event(kind: str = "identify", now: datetime | None = None) -> dict[str, Any]:
    stamp = (now or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    event: dict[str, Any] = {
        "messageId": f"smoke-{uuid.uuid4()}",
        "userId": SMOKE_USER,
        "anonymousId": None,
        "context": {"library": {"name": "segment-qualtrics-smoke", "version": "1"}},
        "integrations": {},
        "timestamp": stamp,
        "sentAt": stamp,
    }
    if kind == "track":
        event.update(type="track", event="Segment Qualtrics Smoke Test", properties={"smoke": True})
    else:
        event.update(type="identify", traits={"email": "smoke-test@example.com", "firstName": "Smoke",
                                               "lastName": "Test"})
    return event


def sign(secret: str, body: bytes) -> str:
    """Segment's X-Signature: hex HMAC-SHA1 of the raw body with the shared secret."""
    return hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


def send_smoke(url: str, secret: str, kind: str = "identify", session: Any = requests) -> tuple[int, str, str]:
    event = smoke_event(kind)
    body = json.dumps(event, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "segment-qualtrics-smoke/1",
               "X-Signature": sign(secret, body)}
    answer = session.post(url, data=body, timeout=15, headers=headers)
    return answer.status_code, answer.text, event["messageId"]


def _secret_json(client: Any, arn: str) -> dict[str, Any]:
    try:
        value = json.loads(client.get_secret_value(SecretId=arn)["SecretString"])
    except (BotoCoreError, ClientError) as exc:   # reported, without the value
        raise DlqError(explain(exc, secret=arn, region=client.meta.region_name)) from None
    except Exception as exc:  # noqa: BLE001 - reported, without the value
        raise DlqError(f"cannot read secret {arn}: {type(exc).__name__}") from None
    return value if isinstance(value, dict) else {}


# ------------------------------------------------------------------------------------------------ commands

def _smoke(args: argparse.Namespace, out: TextIO) -> int:
    url, secret = args.url, args.secret or args.context.environ.get("SEGMENT_SHARED_SECRET")
    if not (url and secret):
        if args.stack:
            target = resolve_target(args.stack, args.region, None)
            outputs = target.outputs or {}   # a stack's target always has them
            url = url or outputs.get("SegmentWebhookUrl")
            if not secret:
                secret = _secret_json(target.client("secretsmanager"), outputs["IngestSecretArn"]).get("sharedSecret")
        else:
            state = read_state(args.state)
            url, secret = url or state.get("url"), secret or state.get("sharedSecret")
    if not url or not secret:
        raise DlqError("need the webhook URL and the shared secret: --url and SEGMENT_SHARED_SECRET, or --stack")
    try:
        status, text, message_id = send_smoke(url, secret, args.event)
    except requests.RequestException as exc:
        print(f"FAIL  POST {url}: {type(exc).__name__}: {exc}", file=out)
        return 1
    verdict = "OK  " if 200 <= status < 300 else "FAIL"
    print(f"{verdict}  POST {url} ({args.event}, messageId {message_id}) -> {status} {text}", file=out)
    if status == 401:
        print("      the shared secret does not match the ingest secret's sharedSecret", file=out)
    elif 200 <= status < 300 and args.event == "identify":
        print(f"      the addContactToXmd worker now creates or updates contact {SMOKE_USER!r}; failures land in its "
              "dead-letter queue (make dlq ARGS=\"list\")", file=out)
    return 0 if 200 <= status < 300 else 1


def _check_qualtrics(args: argparse.Namespace, out: TextIO) -> int:
    environ = args.context.environ
    token, datacenter = environ.get("QUALTRICS_API_TOKEN"), environ.get("QUALTRICS_DATACENTER")
    source = "QUALTRICS_API_TOKEN / QUALTRICS_DATACENTER"
    arn = args.secret_arn
    if not arn and args.stack and not (token and datacenter):
        arn = (resolve_target(args.stack, args.region, None).outputs or {}).get("QualtricsSecretArn")
    if arn:
        import boto3

        value = _secret_json(boto3.client("secretsmanager", region_name=args.region), arn)
        token, datacenter, source = value.get("apiToken"), value.get("datacenter") or "iad1", f"secret {arn}"
    if not token or not datacenter:
        raise DlqError("no Qualtrics credentials: set QUALTRICS_API_TOKEN and QUALTRICS_DATACENTER, or pass "
                       "--secret-arn or --stack")
    override = args.base_url or args.context.environ.get("QUALTRICS_BASE_URL") or None
    try:
        # The worker's client: the datacenter checked as the worker checks it, the token sent only where the
        # worker would send it (docs/security.md), no redirects followed.
        client = QualtricsClient.with_token(token, datacenter, override)
        base_url = client.base_url(QualtricsCredentials(token, datacenter))
    except DestinationError as exc:
        raise DlqError(f"{exc.message} (from {source})") from None
    report = check_whoami(client, expected_datacenter=None if override else datacenter)
    print(f"GET {base_url}/API/v3/whoami with the credentials of {source} -> {report.status or 'no answer'}", file=out)
    if report.datacenter or report.brand_id:
        print(f"      brand {report.brand_id or '?'}, datacenter {report.datacenter or '?'}, account type "
              f"{report.account_type or '?'}", file=out)
    for problem in report.problems:
        print(f"WARN  {problem}", file=out)
    if report.ok:
        print("OK    the token works and the datacenter is the brand's", file=out)
    return 0 if report.ok else 1


def add_smoke(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="webhook URL (the SegmentWebhookUrl output)")
    parser.add_argument("--secret", help="shared secret (prefer the SEGMENT_SHARED_SECRET variable: argv is visible)")
    parser.add_argument("--event", choices=["identify", "track"], default="identify")
    parser.add_argument("--stack", help="read the URL and the shared secret from this deployed stack")
    parser.add_argument("--region")
    parser.add_argument("--state", default=str(DEFAULT_STATE), help="local stack state file")


def add_check_qualtrics(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--secret-arn", help="the Qualtrics secret (the QualtricsSecretArn output)")
    parser.add_argument("--stack", help="read the Qualtrics secret ARN from this deployed stack")
    parser.add_argument("--region")
    parser.add_argument("--base-url", help="replaces https://{datacenter}.qualtrics.com")


def smoke(args: argparse.Namespace) -> int:
    return _run(_smoke, args)


def check_qualtrics(args: argparse.Namespace) -> int:
    return _run(_check_qualtrics, args)


def _run(command: Callable[[argparse.Namespace, TextIO], int], args: argparse.Namespace) -> int:
    out, err = args.context.out, args.context.err
    if args.stack or getattr(args, "secret_arn", None):
        # No --region: the secret ARN's, else AWS configuration's, else samconfig.toml's (where `make deploy` went).
        args.region = pick_region(args.region, getattr(args, "secret_arn", None))
    try:
        return command(args, out)
    except DlqError as exc:
        print(f"error: {exc}", file=err)
        return 1
    except (BotoCoreError, ClientError) as exc:
        print(f"error: {explain(exc, stack=args.stack, secret=getattr(args, 'secret_arn', None), region=args.region)}",
              file=err)
        return 1
