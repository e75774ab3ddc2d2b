"""The one command line: ``segment-qualtrics <command>`` (or ``python -m segment_qualtrics <command>``).

The subscriptions file (no AWS, no network):
    check-config     [FILE] [--env NAME=VALUE]...     check the file as every function does when it starts
    preview          EVENT.json [--config FILE] ...   dry run: triggers, payloads, the exact Qualtrics requests
    import-segment   FILE [-o OUT]                    a Segment Public API export -> our subscriptions file
Operations (a deployed stack with --stack NAME, else the local stack of `make run`):
    dlq              list | redrive | purge           the dead letters of every action, with their reasons
    smoke                                             POST one signed test event to the webhook
    check-qualtrics                                   GET /API/v3/whoami with the Qualtrics credentials

``segment-qualtrics <command> --help`` shows a command's options. Each command's module is imported only
when that command runs: ``--help`` and check-config never load boto3.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

PROG = "segment-qualtrics"


@dataclass(frozen=True)
class Command:
    """Where a command lives: ``adder(parser)`` declares its options, ``runner(args) -> int`` runs it."""

    module: str
    help: str
    adder: str = "add_arguments"
    runner: str = "main"

    def load(self) -> tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]:
        module = importlib.import_module(self.module)
        return getattr(module, self.adder), getattr(module, self.runner)


_CONFIG, _OPS = "segment_qualtrics.tools.config_commands", "segment_qualtrics.tools.ops_commands"
COMMANDS: dict[str, Command] = {
    "check-config": Command(_CONFIG, "check a subscriptions file", "add_check_config", "check_config"),
    "preview": Command(_CONFIG, "dry-run events through the subscriptions", "add_preview", "preview"),
    "import-segment": Command(_CONFIG, "convert a Segment subscriptions export", "add_import_segment",
                              "import_segment"),
    "dlq": Command("segment_qualtrics.tools.dlq_commands", "list, redrive or purge the dead-letter queues"),
    "smoke": Command(_OPS, "POST one signed test event to the webhook", "add_smoke", "smoke"),
    "check-qualtrics": Command(_OPS, "GET /API/v3/whoami with the Qualtrics credentials", "add_check_qualtrics",
                               "check_qualtrics"),
    "backfill": Command("segment_qualtrics.tools.backfill", "load past Segment events into Qualtrics in bulk",
                        runner="run"),
}


@dataclass(frozen=True)
class Context:
    """What a command reads and writes besides its options: ``args.context`` (tests pass their own)."""

    out: TextIO
    err: TextIO
    environ: Mapping[str, str]
    ask: Callable[[str], str] = input
    target: Any = None   # dlq: where the queues are (default: from --stack or the local stack's state file)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every command is listed; only ``command``'s module is imported to declare its options."""
    parser = argparse.ArgumentParser(prog=PROG, description=(__doc__ or "").split("\n")[0],
                                     epilog="\n".join((__doc__ or "").split("\n")[2:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, spec in COMMANDS.items():
        sub = commands.add_parser(name, help=spec.help, description=spec.help[0].upper() + spec.help[1:] + ".",
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        if name == command:
            adder, runner = spec.load()
            adder(sub)
            sub.set_defaults(run=runner)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The command word: the first argument that is not an option (the top level has only -h)."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Sequence[str] | None = None, *, environ: Mapping[str, str] | None = None, out: TextIO | None = None,
         err: TextIO | None = None, ask: Callable[[str], str] = input, target: Any = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(_command_of(argv)).parse_args(argv)
    args.context = Context(out or sys.stdout, err or sys.stderr, os.environ if environ is None else environ, ask,
                           target)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
