"""Rate limits, added latency and served/refused counts for the local Qualtrics sandbox.

Pure bookkeeping (standard library only, no HTTP): local/sandbox/qualtrics_sandbox.py consults it per API call.

Endpoint classes (what a call is counted and limited as):
    contact_writes  POST .../contacts, PUT and DELETE .../contacts/{id}, POST .../mailinglists/{ml}/contacts
    searches        POST .../contacts/search
    transactions    POST .../transactions, .../transactionbatches[...]
    workflows       POST /inbound-event/...
    imports         POST .../mailinglists/{ml}/transactioncontacts
    reads           every GET
    other           anything else (still counts against the brand-wide total)
A call spends one unit of its class's budget and one of the brand-wide budget ("brand"); it is
refused (429) when either is used up. Limits are a sliding window: never more than N accepted calls
of a class in any window of `windowSeconds` (60 by default, so figures read "per minute"; a smaller
window scales time down for tests and benches).
"""

from __future__ import annotations

import math
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

ENDPOINT_CLASSES = ("contact_writes", "searches", "transactions", "workflows", "reads", "imports", "other")
BRAND = "brand"
DEFAULT_WINDOW_SECONDS = 60.0
MAX_LIMIT = 10_000_000  # a budget above this is a typo, not a limit (the window keeps one timestamp per call)
MAX_LATENCY_SECONDS = 60.0  # longer would outlast every client timeout and hold a server thread for nothing

_CLASS_RULES: tuple[tuple[str | None, re.Pattern[str], str], ...] = (
    ("POST", re.compile(r"/API/v3/directories/[^/]+/mailinglists/[^/]+/transactioncontacts/?"), "imports"),
    ("POST", re.compile(r"/API/v3/directories/[^/]+/contacts/search/?"), "searches"),
    ("POST", re.compile(r"/API/v3/directories/[^/]+/contacts/?"), "contact_writes"),
    ("PUT", re.compile(r"/API/v3/directories/[^/]+/contacts/[^/]+/?"), "contact_writes"),
    ("DELETE", re.compile(r"/API/v3/directories/[^/]+/contacts/[^/]+/?"), "contact_writes"),
    ("POST", re.compile(r"/API/v3/directories/[^/]+/mailinglists/[^/]+/contacts/?"), "contact_writes"),
    ("POST", re.compile(r"/API/v3/directories/[^/]+/transactions/?"), "transactions"),
    (None, re.compile(r"/API/v3/directories/[^/]+/transactionbatches(/.*)?"), "transactions"),
    ("POST", re.compile(r"/inbound-event/.*"), "workflows"),
)


def endpoint_class(method: str, path: str) -> str:
    """The class a call is limited and counted as; every GET is a read."""
    if method == "GET":
        return "reads"
    for wanted, pattern, name in _CLASS_RULES:
        if wanted in (None, method) and pattern.fullmatch(path):
            return name
    return "other"


def _number(value: Any, what: str, *, low: float = 0.0, high: float = math.inf, integer: bool = False) -> float:
    # bool is an int subclass, but true/false are not numbers in a JSON config.
    finite = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
    if isinstance(value, bool) or not finite:  # math.isfinite would overflow on a huge int
        raise ValueError(f"{what} must be a number")
    if integer and isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{what} must be a whole number")
    if not low <= value <= high:
        raise ValueError(f"{what} must be between {low:g} and {high:g}")
    return value


# --------------------------------------------------------------------------------------------
# Limits
# --------------------------------------------------------------------------------------------


def parse_limits(spec: Any) -> dict[str, Any]:
    """{"brand"?: n, "<class>"?: n, "windowSeconds"?: s} -> normalized config; ValueError names the bad key."""
    if not isinstance(spec, dict):
        raise ValueError("limits must be a JSON object")
    budgets: dict[str, int] = {}
    window = DEFAULT_WINDOW_SECONDS
    for key, value in spec.items():
        if key == "windowSeconds":
            window = _number(value, "windowSeconds", low=0.001, high=86_400)
        elif key == BRAND or key in ENDPOINT_CLASSES:
            if value is not None:  # null: this class is not limited
                budgets[key] = int(_number(value, f"limit {key!r}", low=0, high=MAX_LIMIT, integer=True))
        else:
            raise ValueError(f"unknown limit {key!r}; known: {', '.join((BRAND, *ENDPOINT_CLASSES))}, windowSeconds")
    return {"budgets": budgets, "windowSeconds": float(window)}


class RateLimiter:
    """Sliding-window budgets per endpoint class plus a brand-wide one; thread-safe.

    A call is admitted only if its class and the brand both have room; an admitted call takes a slot in
    both windows at once, under one lock, so concurrent callers can never overshoot a budget.
    """

    def __init__(self, config: dict[str, Any] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.configure(config or parse_limits({}))

    def configure(self, config: dict[str, Any]) -> None:
        with self._lock:
            self._budgets: dict[str, int] = dict(config["budgets"])
            self._window: float = config["windowSeconds"]
            self._calls: dict[str, deque[float]] = {name: deque() for name in self._budgets}

    def config(self) -> dict[str, Any]:
        with self._lock:
            return {**self._budgets, "windowSeconds": self._window}

    def acquire(self, klass: str) -> tuple[str, float] | None:
        """None if the call may proceed (and it is counted); else (exhausted budget name, seconds to wait)."""
        with self._lock:
            if not self._budgets:
                return None
            now = self._clock()
            names = [n for n in (klass, BRAND) if n in self._budgets]
            waits = []
            for name in names:
                calls = self._calls[name]
                while calls and calls[0] <= now - self._window:
                    calls.popleft()
                budget = self._budgets[name]
                if len(calls) >= budget:
                    # Room comes back when the oldest call that still fills the budget leaves the window
                    # (a budget of 0 never has room: wait a whole window).
                    wait = calls[len(calls) - budget] + self._window - now if budget else self._window
                    waits.append((name, wait))
            if waits:
                return max(waits, key=lambda item: item[1])
            for name in names:
                self._calls[name].append(now)
            return None

    def retry_after_header(self, seconds: float) -> str:
        """Whole seconds (rounded up) at real time scale, as HTTP defines it; milliseconds when time is scaled."""
        if self._window >= DEFAULT_WINDOW_SECONDS:
            return str(max(1, math.ceil(seconds)))
        return f"{max(0.001, math.ceil(seconds * 1000) / 1000):.3f}"

    def describe(self, name: str) -> str:
        return f"{self._budgets.get(name)} calls per {self._window:g} s"


# --------------------------------------------------------------------------------------------
# Latency
# --------------------------------------------------------------------------------------------


def parse_latency(spec: Any) -> dict[str, Any]:
    """{"seconds"?: s, "classes"?: {"<class>": s}, "jitterSeconds"?: s, "seed"?: int} -> normalized config."""
    if not isinstance(spec, dict):
        raise ValueError("latency must be a JSON object")
    known = ("seconds", "classes", "jitterSeconds", "seed")
    for key in spec:
        if key not in known:
            raise ValueError(f"unknown latency field {key!r}; known: {', '.join(known)}")
    seconds = _number(spec.get("seconds", 0), "seconds", high=MAX_LATENCY_SECONDS)
    jitter = _number(spec.get("jitterSeconds", 0), "jitterSeconds", high=MAX_LATENCY_SECONDS)
    seed = spec.get("seed")
    if seed is not None:
        seed = int(_number(seed, "seed", low=-(2**63), high=2**63, integer=True))
    classes = spec.get("classes", {})
    if not isinstance(classes, dict):
        raise ValueError("classes must map endpoint classes to seconds")
    per_class = {}
    for name, value in classes.items():
        if name not in ENDPOINT_CLASSES:
            raise ValueError(f"unknown endpoint class {name!r}; known: {', '.join(ENDPOINT_CLASSES)}")
        per_class[name] = float(_number(value, f"classes.{name}", high=MAX_LATENCY_SECONDS))
    return {"seconds": float(seconds), "classes": per_class, "jitterSeconds": float(jitter), "seed": seed}


class Latency:
    """Added delay per call: the class's figure (else the fixed one) plus uniform jitter in [0, jitterSeconds]."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self._lock = threading.Lock()
        self.configure(config or parse_latency({}))

    def configure(self, config: dict[str, Any]) -> None:
        with self._lock:
            self._config = config
            self._random = random.Random(config["seed"])

    def config(self) -> dict[str, Any]:
        with self._lock:
            return {**self._config, "classes": dict(self._config["classes"])}

    def delay(self, klass: str) -> float:
        with self._lock:
            base = self._config["classes"].get(klass, self._config["seconds"])
            jitter = self._config["jitterSeconds"]
            return base + (self._random.uniform(0, jitter) if jitter else 0.0)


# --------------------------------------------------------------------------------------------
# Counts
# --------------------------------------------------------------------------------------------


class Stats:
    """Per endpoint class: calls answered, how many the limiter refused, and the statuses answered."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._classes: dict[str, dict[str, Any]] = {}
            self._refused_by: dict[str, int] = {}

    def record(self, klass: str, status: int, refused_by: str | None = None) -> None:
        with self._lock:
            entry = self._classes.setdefault(klass, {"served": 0, "refused": 0, "statuses": {}})
            entry["refused" if refused_by else "served"] += 1
            entry["statuses"][str(status)] = entry["statuses"].get(str(status), 0) + 1
            if refused_by:
                self._refused_by[refused_by] = self._refused_by.get(refused_by, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            classes = {
                name: {**entry, "statuses": dict(entry["statuses"])} for name, entry in sorted(self._classes.items())
            }
            total = {
                "served": sum(e["served"] for e in classes.values()),
                "refused": sum(e["refused"] for e in classes.values()),
                "status429": sum(e["statuses"].get("429", 0) for e in classes.values()),
            }
            return {"classes": classes, "total": total, "refusedBy": dict(sorted(self._refused_by.items()))}
