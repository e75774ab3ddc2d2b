"""A function's start with its subscriptions file: what is switched off, and a start that fails.

- ``subscriptions_at_start``: the subscriptions a function runs with. Each invalid subscription is switched
  off with one ERROR line naming every problem of it; ``SubscriptionsInvalid`` (by function: ``ingest`` or
  the worker's action) is emitted at every cold start, 0 included, so its alarm also recovers.
- ``log_startup_failure``: one ERROR line when a function cannot start at all (a subscriptions file that
  cannot be read or parsed, missing settings). The ingest then answers every request with its own JSON 5xx
  (ingest_app.IngestStartupFailure); a worker fails its invocations, so the messages stay queued.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from segment_qualtrics.destination.subscriptions import ConfigError, LoadedSubscriptions, Subscription, load_at_start
from segment_qualtrics.runtime.observability import Metric, MetricBatch, logger


def subscriptions_at_start(function: str, environ: Mapping[str, str] = os.environ,
                           batch: MetricBatch | None = None) -> list[Subscription]:
    """Load the file (ConfigError only when unusable as a whole), report what is switched off, return the rest."""
    loaded = load_at_start(environ=environ)
    report_invalid(loaded, function, batch or MetricBatch())
    return loaded.subscriptions


def report_invalid(loaded: LoadedSubscriptions, function: str, batch: MetricBatch) -> None:
    for problem in loaded.file_problems:
        logger.error(f"subscriptions file problem: {problem}",
                     extra={"outcome": "config_problem", "function": function, "config": loaded.source,
                            "problems": [problem]})
    for sub in loaded.invalid:
        what = ("its events are dead-lettered as subscription_invalid" if sub.routed
                else "it routes no events")
        problems = "; ".join(p.removeprefix(f"{sub.label}: ") for p in sub.problems)
        logger.error(f"subscription switched off: {sub.label}: {problems} ({what})",
                     extra={"outcome": "subscription_invalid", "function": function, "config": loaded.source,
                            "subscription": sub.label,
                            "problems": list(sub.problems), "routed": sub.routed})
    batch.add(Metric.SUBSCRIPTIONS_INVALID, len(loaded.invalid), function=function)
    batch.flush()   # now, at init: no invocation's metrics to wait for


def startup_failure_reason(exc: BaseException) -> str:
    if isinstance(exc, ConfigError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def log_startup_failure(exc: BaseException, function: str) -> None:
    """The one ERROR line of a function that cannot start."""
    logger.error(f"{function} cannot start: {startup_failure_reason(exc)}",
                 extra={"outcome": "startup_failed", "function": function,
                        "errorCode": "subscriptions_unusable" if isinstance(exc, ConfigError) else "startup_failed"})
