"""The subscriptions file's commands of the one CLI (tools/cli.py): ``segment-qualtrics <command>``.

    check-config   [FILE] [--env NAME=VALUE]...     check the file as every function does when it starts
    preview        EVENT.json [--config FILE] [--env NAME=VALUE]... [--datacenter DC] [--base-url URL] [--json]
                                                    dry run: triggers, payloads, the exact Qualtrics requests
    import-segment FILE [-o OUT]                    a Segment Public API export → our subscriptions file

FILE / --config default to $DESTINATION_CONFIG, else the packaged default_subscriptions.json. ``--env``
sets or overrides an environment variable for ``${NAME}`` references. No AWS, no network.
Exit status: 0 fine, 1 problems found (listed), 2 bad usage or input.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, TextIO

from segment_qualtrics.destination.errors import DestinationError
from segment_qualtrics.destination.subscriptions import (
    ConfigError,
    Subscription,
    config_path,
    parse_subscriptions,
    read_config,
    referenced_variables,
)
from segment_qualtrics.segment.mapping_kit import UNDEFINED
from segment_qualtrics.tools.importer import ExportError, only_here
from segment_qualtrics.tools.importer import import_segment as convert

ENV_HELP = "set an environment variable for ${NAME} references (repeatable); overrides the real one"


def add_check_config(parser: argparse.ArgumentParser) -> None:
    parser.description = "Check a subscriptions file as every function does at start."
    parser.add_argument("file", nargs="?", type=Path, help="default: $DESTINATION_CONFIG or the packaged file")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help=ENV_HELP)
    parser.set_defaults(usage=parser.format_usage)


def add_preview(parser: argparse.ArgumentParser) -> None:
    parser.description = ("What the destination would do with the events of a file: triggers, payloads and the "
                          "exact Qualtrics requests. Sends nothing.")
    parser.add_argument("event", type=Path,
                        help="a Segment event, an array, {\"batch\": [...]} or an API Gateway event")
    parser.add_argument("--config", type=Path,
                        help="subscriptions file (default: $DESTINATION_CONFIG or the packaged)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help=ENV_HELP)
    parser.add_argument("--datacenter", default="iad1", help="Qualtrics datacenter id (default: iad1)")
    parser.add_argument("--base-url",
                        help="replaces https://{datacenter}.qualtrics.com (default: $QUALTRICS_BASE_URL)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(usage=parser.format_usage)


def add_import_segment(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Convert Segment's Public API 'list subscriptions from destination' answer for a "
                          "Qualtrics (Actions) destination into our file.")
    parser.add_argument("file", type=Path,
                        help='{"data": {"subscriptions": [...]}}, {"subscriptions": [...]} or a list')
    parser.add_argument("-o", "--output", type=Path, help="write the file here (default: standard output)")


def _environment(args: argparse.Namespace) -> dict[str, str] | None:
    """The environment with the --env overrides; None (usage and reason on stderr) when one is malformed."""
    err = args.context.err
    try:
        return {**args.context.environ, **_env_overrides(args.env)}
    except ValueError as exc:
        err.write(args.usage())
        print(f"error: {exc}", file=err)
        return None


def _env_overrides(pairs: list[str]) -> dict[str, str]:
    overrides = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--env wants NAME=VALUE, got {pair!r}")
        overrides[name] = value
    return overrides


# --- check-config -------------------------------------------------------------------------------

def check_config(args: argparse.Namespace) -> int:
    env, out, err = _environment(args), args.context.out, args.context.err
    if env is None:
        return 2
    path = Path(args.file or config_path(env))
    data: Any = None   # unset variables are only reported once the file is read
    try:
        data = read_config(path)
        subscriptions = parse_subscriptions(data, str(path), env)
    except ConfigError as exc:
        print(exc, file=err)
        if exc.unset_variables:
            print(_unset_hint(data, exc.unset_variables), file=err)
        return 1
    enabled = sum(s.enabled for s in subscriptions)
    print(f"{path}: {len(subscriptions)} subscription(s), {enabled} enabled, no problems", file=out)
    for sub in subscriptions:
        print(f"  {summary(sub)}", file=out)
    for warning in _workflow_url_warnings(subscriptions, env.get("QUALTRICS_BASE_URL") or None):
        print(f"warning: {warning}", file=err)
    return 0


def _workflow_url_warnings(subscriptions: list[Subscription], base_url: str | None) -> list[str]:
    """A fixed workflowUrl the workers would refuse to send the token to (workflow_url_not_allowed)."""
    mapped = {s.name: s.mapping.get("workflowUrl") for s in subscriptions if s.enabled}
    urls = {name: url for name, url in mapped.items() if isinstance(url, str)}
    if not urls:
        return []
    from segment_qualtrics.adapters.qualtrics import (  # requests: only when there is a URL to check
        QualtricsClient,
        QualtricsCredentials,
    )

    def no_credentials(force: bool) -> QualtricsCredentials:
        raise RuntimeError("the URL check makes no call")

    client = QualtricsClient(no_credentials, base_url)
    return [f"{name!r}: its workflowUrl {url} is not a Qualtrics URL"
            f"{' nor QUALTRICS_BASE_URL' if base_url else ''}: the workers will refuse it (workflow_url_not_allowed)"
            for name, url in urls.items() if not client.is_qualtrics_url(url)]


def _unset_hint(data: Any, names: list[str]) -> str:
    used = referenced_variables(data)
    listing = "; ".join(f"{n} (used by {', '.join(repr(s) for s in used.get(n, []))})" if used.get(n) else n
                        for n in names)
    return (f"unset environment variable(s): {listing}. Set them, or pass --env NAME=VALUE "
            "(make check-config VARS=\"NAME=VALUE ...\").")


def summary(sub: Subscription) -> str:
    """One line: state, action, name, trigger, and how its fields are mapped."""
    defaults = sub.action.default_mapping
    own = [k for k in sub.action.fields if k in sub.mapping and defaults.get(k, UNDEFINED) != sub.mapping[k]]
    kept = [k for k in sub.mapping if k not in own]
    off = [k for k in sub.action.fields if k in defaults and k not in sub.mapping]
    fields = f"mapped: {', '.join(own) or '-'}; {len(kept)} default(s)"
    if off:
        fields += f"; off: {', '.join(off)}"
    state = "enabled " if sub.enabled else "disabled"
    return f"{state}  {sub.action.slug:<24}  {sub.name!r}  when {sub.trigger.source}  ({fields})"


# --- preview ------------------------------------------------------------------------------------

def preview(args: argparse.Namespace) -> int:
    from segment_qualtrics.tools.preview import (  # requests: only this command
        PreviewInputError,
        read_events,
        render,
    )
    from segment_qualtrics.tools.preview import preview as dry_run

    env, out, err = _environment(args), args.context.out, args.context.err
    if env is None:
        return 2

    path = Path(args.config or config_path(env))
    try:
        data = read_config(path)
        subscriptions = parse_subscriptions(data, str(path), env, unset="keep")
    except ConfigError as exc:
        print(exc, file=err)
        return 1
    body = _read_bytes(args.event, err)
    if body is None:
        return 2
    try:
        raw_events = read_events(body)
    except PreviewInputError as exc:
        print(f"error: {args.event}: {exc}", file=err)
        return 2
    try:
        result = dry_run(raw_events, subscriptions, datacenter=args.datacenter,
                         base_url=args.base_url or env.get("QUALTRICS_BASE_URL") or None)
    except DestinationError as exc:   # a datacenter that is not ^[a-zA-Z0-9-]+$
        print(f"error: {exc.message}", file=err)
        return 2
    unset = sorted(n for n in referenced_variables(data) if n not in env)
    if unset:
        result.warnings.append(f"not set, so left as written: {', '.join('${' + n + '}' for n in unset)} "
                               "(pass --env NAME=VALUE)")
    result.config = str(path)
    if args.json:
        json.dump(result.to_dict(), out, indent=2, ensure_ascii=False)
        out.write("\n")
    else:
        out.write(render(result))
    return 0


def _read_bytes(path: Path, err: TextIO) -> bytes | None:
    """The file's bytes; None (with the reason on ``err``) when it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        print(f"error: cannot read {path}: {exc.strerror or exc}", file=err)
        return None


# --- import-segment -----------------------------------------------------------------------------

def import_segment(args: argparse.Namespace) -> int:
    env, out, err = args.context.environ, args.context.out, args.context.err
    body = _read_bytes(args.file, err)
    if body is None:
        return 2
    try:
        data: Any = json.loads(body)
    except ValueError as exc:
        print(f"error: {args.file} is not valid JSON: {exc}", file=err)
        return 2
    try:
        result = convert(data, env)
    except ExportError as exc:
        print(f"error: {args.file}: {exc}", file=err)
        return 2
    text = json.dumps(result.config, indent=2, ensure_ascii=False) + "\n"
    if args.output:
        args.output.write_text(text)
    else:
        out.write(text)
    count = len(result.config["subscriptions"])
    where = args.output or "standard output"
    print(f"imported {count} subscription(s) into {where}", file=err)
    for line in result.not_carried:
        print(f"  not carried over: {line}", file=err)
    for line in result.notes:
        print(f"  note: {line}", file=err)
    for line in only_here():
        print(f"  not in Segment: {line}", file=err)
    for line in result.problems:
        print(f"  problem: {line}", file=err)
    if not result.complete:
        print("check the items above, then: make check-config" + (f" CONFIG={args.output}" if args.output else ""),
              file=err)
    return 0 if result.complete else 1
