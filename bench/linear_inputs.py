"""No input can tie up a function: time against input size for adversarial strings, doubling up to 4 MiB.

Run from the repository root: ``.venv/bin/python bench/linear_inputs.py`` (``--max-kib 512`` for a short run).

For each case, a table of size -> seconds (best of ``--repeat`` runs) and the ratio to the previous size.
Linear time doubles with the size (ratio ~2); the quadratic email regex this replaces gave ~4.5 (0.8, 3.6,
15.8 s at 32, 64, 128 KB), a regex glob with four stars far more. The cases:
- masking (``_mask_emails`` then ``_mask_phones``, without the cut of log strings): strings built to make
  a backtracking pattern scan far and fail at every position (local-part runs without an "@", domains
  without a TLD, digit groups, parentheses), and a text full of real phone numbers and emails (every match
  costs Python work);
- the log formatter (``_clean``): the same, through the 32 KiB cut every logged string gets;
- the FQL glob matcher: ``*a*a*a*b`` style literal patterns and a 200-character ``?`` segment read from the
  event, against a run of "a";
- the whole ingest handler (``IngestApp.handle``: HTTP API event in, response and log lines out, secrets and
  SQS replaced by in-memory stand-ins) on its rejection paths: a huge Content-Type (415), a body with a bad
  signature (401), a signed event whose ``type`` is a huge string (400, echoed and logged), and a signed
  body of junk text inside a JSON string;
- the ingest's checks of a body (``read_body``: parse, nesting, lone surrogates, numbers that read as
  infinite) on the shapes that once walked every item with a path each (seconds and over a GB at 4 MiB):
  items nested 60 deep with "e2024" in a string (the number gate fires), with a real 1e999 after them (the
  event is walked to name it), next to a 65-level event in a batch, and with a lone surrogate (json.loads
  reads the body); json.loads of the first for scale.
Sizes go up to MAX_BODY_BYTES (4 MiB), the largest body the ingest reads. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import os
import re
import sys
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "bench")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "SegmentQualtrics")

from segment_qualtrics.destination.subscriptions import parse_subscriptions  # noqa: E402
from segment_qualtrics.ingest.core import MAX_BODY_BYTES, IngestCredentials  # noqa: E402
from segment_qualtrics.runtime import observability  # noqa: E402
from segment_qualtrics.runtime.ingest_app import IngestApp  # noqa: E402
from segment_qualtrics.runtime.settings import IngestSettings  # noqa: E402
from segment_qualtrics.segment.events import BodyError, read_body  # noqa: E402
from segment_qualtrics.segment.fql import compile_trigger  # noqa: E402

SECRET = "bench-shared-secret"


def repeat(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


MASKING: dict[str, Callable[[int], str]] = {
    "local part, no @": lambda n: repeat("a", n),
    "a@ a@ a@ ...": lambda n: repeat("a@", n),
    "@a.a.a.a... (no TLD)": lambda n: "@" + repeat("a1.", n - 1),
    "1 1 1 1 ... (digit groups)": lambda n: repeat("1 ", n),
    "12-12-12-... then ':'": lambda n: repeat("12-", n - 1) + ":",
    "0 ( 0 ( ...": lambda n: repeat("0 (", n),
    "real phones and emails": lambda n: repeat("call +1 415 555 0142 or mail ann.lee@example.com; ", n),
}
GLOBS: dict[str, tuple[str, Callable[[int], dict[str, Any]]]] = {
    "literal *a*a*a*b*": ('match(event, "*a*a*a*b*")', lambda n: {"event": repeat("a", n)}),
    "literal *a?*[ab]*a*a*a*b*": ('match(event, "*a?*[ab]*a*a*a*b*")', lambda n: {"event": repeat("a", n)}),
    "event pattern *???(200)b*": ("match(event, properties.p)",
                                  lambda n: {"event": repeat("a", n), "properties": {"p": "*" + "?" * 200 + "b*"}}),
}


class CountingPublisher:
    def publish(self, action: str, messages: Any) -> list[Any]:
        return []


class BenchIngestApp(IngestApp):
    """The ingest function's own object, with the secret given instead of read from Secrets Manager."""

    def credentials(self, force: bool = False) -> IngestCredentials:
        return IngestCredentials(SECRET)


def http_event(body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    return {"version": "2.0", "routeKey": "POST /segment", "rawPath": "/segment", "headers": headers,
            "body": body.decode("utf-8"), "isBase64Encoded": False,
            "requestContext": {"http": {"method": "POST", "path": "/segment"}, "requestId": "bench"}}


def signed(body: bytes) -> dict[str, str]:
    signature = hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    return {"content-type": "application/json", "x-signature": signature}


def body_of(n: int, make: Callable[[str], Any], copies: int = 1) -> bytes:
    """A JSON body of about n bytes in which ``make`` puts ``copies`` copies of one big string."""
    return json.dumps(make(repeat("a1 @(", max(1, n // copies - 100)))).encode()


HANDLER: dict[str, Callable[[int], dict[str, Any]]] = {
    "415: Content-Type of n chars": lambda n: http_event(b"{}", {"content-type": "text/plain;" + repeat("x", n)}),
    "401: bad signature, n-byte body": lambda n: http_event(
        body_of(n, lambda s: {"type": "identify", "userId": s}), {"content-type": "application/json",
                                                                  "x-signature": "0" * 40}),
    "400: type of n chars, signed": lambda n: (lambda b: http_event(b, signed(b)))(
        json.dumps({"type": repeat("x1-2 (", n - 60), "messageId": "m", "userId": "u"}).encode()),
    "400: junk n-byte string, signed": lambda n: (lambda b: http_event(b, signed(b)))(
        body_of(n, lambda s: {"type": "identify", "messageId": "m", "traits": {"phone": s}, "timestamp": s}, 2)),
}


def _items_deep(n: int, template: str) -> bytes:
    """``template`` with ITEMS: about n bytes of small items (``0,0,...``) 60 levels down; DEEP: 63 levels."""
    items = ",".join(["0"] * max(1, (n - len(template)) // 2))
    return template.replace("ITEMS", "[" * 60 + items + "]" * 60).replace("DEEP", "[" * 63 + "1" + "]" * 63).encode()


BODIES: dict[str, Callable[[int], bytes]] = {
    "gate fires: 'e2024' in a string": lambda n: _items_deep(
        n, '{"type":"identify","userId":"u","traits":{"note":"code e2024","x":ITEMS}}'),
    "a real 1e999 after the items": lambda n: _items_deep(
        n, '{"type":"identify","userId":"u","traits":{"x":ITEMS,"n":1e999}}'),
    "a 65-level event in a batch": lambda n: _items_deep(
        n, '[{"type":"identify","userId":"u","traits":{"x":ITEMS}},{"type":"identify","userId":"u","d":DEEP}]'),
    "a lone surrogate (json.loads)": lambda n: _items_deep(
        n, '[{"type":"identify","userId":"u","traits":{"x":ITEMS,"s":"\\ud800"}}]'),
}


BODY_CHECKS = "ingest body checks (read_body: parse and every check), items 60 levels deep"


def body_check(make: Callable[[int], bytes], parse: Callable[[bytes], Any]) -> Callable[[int], Callable[[], Any]]:
    def at(n: int) -> Callable[[], Any]:
        body = make(n)

        def run() -> None:
            with contextlib.suppress(BodyError):
                parse(body)
        return run
    return at


def best_time(run: Callable[[], Any], times: int) -> float:
    best = float("inf")
    for _ in range(times):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def table(title: str, sizes: list[int], timings: dict[str, Callable[[int], Callable[[], Any]]], times: int) -> None:
    print(f"\n{title}")
    names = list(timings)
    width = max(len(n) for n in names)
    print(f"{'case':<{width}}  " + "  ".join(f"{_kib(s):>16}" for s in sizes))
    for name in names:
        cells, previous = [], None
        for size in sizes:
            run = timings[name](size)
            seconds = best_time(run, times)
            ratio = f"x{seconds / previous:.1f}" if previous and previous > 1e-5 else ""
            cells.append(f"{seconds:>9.4f}s {ratio:>5}")
            previous = seconds
        print(f"{name:<{width}}  " + "  ".join(cells), flush=True)


def masking(clean: Callable[[str], Any], make: Callable[[int], str]) -> Callable[[int], Callable[[], Any]]:
    def at(n: int) -> Callable[[], Any]:
        text = make(n)
        return lambda: clean(text)
    return at


def glob(source: str, make: Callable[[int], dict[str, Any]]) -> Callable[[int], Callable[[], Any]]:
    trigger = compile_trigger(source)

    def at(n: int) -> Callable[[], Any]:
        event = make(n)
        return lambda: trigger.matches(event)
    return at


# The previous release's patterns, for --before.
OLD_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
OLD_GLOB = re.compile(r".*a.*a.*a.*b", re.DOTALL)   # how match(event, "*a*a*a*b") was translated


def before(times: int) -> None:
    table("BEFORE: the address regex on 'aaaa...' (sizes in KiB)", [8192, 16384, 32768, 65536],
          {"old _EMAIL.sub": masking(lambda text: OLD_EMAIL.sub("x", text), lambda n: repeat("a", n))}, times)
    sizes = [150, 300, 600]
    print(f"\nBEFORE: regex glob *a*a*a*b (fullmatch), text of {sizes} characters")
    for size in sizes:
        text = repeat("a", size)
        print(f"{size:>5} chars: {best_time(lambda: OLD_GLOB.fullmatch(text), 1):.4f}s", flush=True)   # noqa: B023


def _kib(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    return f"{size // 1024} KiB" if size < 1024 * 1024 else f"{size // (1024 * 1024)} MiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-kib", type=int, default=32)
    parser.add_argument("--max-kib", type=int, default=MAX_BODY_BYTES // 1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--before", action="store_true",
                        help="first time the patterns this release replaced, on small inputs (they are quadratic)")
    parser.add_argument("--body-checks", action="store_true", help="only the table of the ingest's body checks")
    args = parser.parse_args(argv)
    sizes, size = [], args.min_kib * 1024
    while size <= args.max_kib * 1024:
        sizes.append(size)
        size *= 2
    print(f"seconds (best of {args.repeat}) per size; xN = ratio to the previous size (linear: about x2)")
    if args.before:
        before(args.repeat)
    body_checks = {**{name: body_check(make, read_body) for name, make in BODIES.items()},
                   "json.loads of the first, for scale": body_check(BODIES["gate fires: 'e2024' in a string"],
                                                                    json.loads)}
    if args.body_checks:
        table(BODY_CHECKS, sizes, body_checks, args.repeat)
        return 0
    table("email and phone masking on caller text, without the cut", sizes,
          {name: masking(lambda text: observability._mask_phones(observability._mask_emails(text)), make)
           for name, make in MASKING.items()}, args.repeat)
    table("log formatter (_clean: secrets, 32 KiB cut, masking) on the same", sizes,
          {name: masking(lambda text: observability._clean({"reason": text}), make) for name, make in MASKING.items()},
          args.repeat)
    table("FQL match() glob, text of n characters", sizes,
          {name: glob(source, make) for name, (source, make) in GLOBS.items()}, args.repeat)

    settings = IngestSettings.from_environ({"INGEST_SECRET_ARN": "arn:bench"})
    subscriptions = parse_subscriptions({"subscriptions": [
        {"name": "Contacts", "actionSlug": "addContactToXmd", "trigger": 'type = "identify"',
         "mapping": {"directoryId": "POOL_BENCH"}}]}, environ={})
    app = BenchIngestApp(settings, subscriptions, CountingPublisher())   # type: ignore[arg-type]
    sink = open(os.devnull, "w")   # noqa: SIM115 - the log lines are written (and so cleaned), then dropped
    observability.logger.registered_handler.setStream(sink)
    statuses: dict[str, int] = {}

    def handler_run(name: str, make: Callable[[int], dict[str, Any]]) -> Callable[[int], Callable[[], Any]]:
        def at(n: int) -> Callable[[], Any]:
            event = make(n)

            def run() -> None:
                with contextlib.redirect_stdout(sink):   # the EMF metric blobs
                    statuses[name] = app.handle(event)["statusCode"]
            return run
        return at

    table(BODY_CHECKS, sizes, body_checks, args.repeat)
    table("whole ingest handler (IngestApp.handle), rejection paths", sizes,
          {name: handler_run(name, make) for name, make in HANDLER.items()}, args.repeat)
    print("\nstatuses:", ", ".join(f"{name} -> {status}" for name, status in statuses.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
