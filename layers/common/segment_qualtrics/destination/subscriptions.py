"""The subscriptions file: which action each event triggers, and how it is mapped.

Format (README: "The subscriptions file"), names as in Segment's subscription objects::

    {"subscriptions": [{"name": "...", "enabled": true, "actionSlug": "addContactToXmd",
                        "trigger": "type = \\"identify\\"", "mapping": {"directoryId": "${QUALTRICS_DIRECTORY_ID}"}}]}

Fields missing from ``mapping`` take the action's default mapping; a field set to ``null`` is switched
off. ``${VAR}`` in a string is replaced by that environment variable, so one file serves every stage.
The file is checked once when a function starts (and by ``make check-config`` and ``make deploy``);
every problem is reported at once. At runtime (``load_at_start``) a subscription with problems is switched
off and the others keep working: one that can still route (enabled, known action, trigger parses) keeps
routing its events, which the worker dead-letters as ``subscription_invalid`` for a redrive after the fix.
Only a file that cannot be read, is not JSON or has no "subscriptions" array stops a function.
Checked: the shape, at most 50 subscriptions, unique names, known actions and fields,
FQL triggers, mapping directives, the variables of enabled subscriptions, required fields, and mapped
values that hold no directive (the same for every event) against the action's payload rules.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from segment_qualtrics.destination.actions import ACTIONS, ActionDefinition
from segment_qualtrics.segment.fql import Trigger, TriggerSyntaxError, compile_trigger
from segment_qualtrics.segment.mapping_kit import MappingError, validate_mapping

MAX_SUBSCRIPTIONS = 50  # Segment's limit per destination instance
DEFAULT_CONFIG = Path(__file__).with_name("default_subscriptions.json")
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(ValueError):
    """Every problem of a subscriptions file. ``unset_variables``: the ``${VAR}`` names not set."""

    def __init__(self, source: str, problems: list[str], unset_variables: Iterable[str] = ()) -> None:
        self.source = source
        self.problems = problems
        self.unset_variables = sorted(set(unset_variables))
        listing = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"subscriptions file {source} has {len(problems)} problem(s):\n{listing}")


@dataclass(frozen=True, slots=True)
class Subscription:
    name: str
    enabled: bool
    action: ActionDefinition
    trigger: Trigger
    mapping: dict[str, Any]   # the effective mapping: defaults merged with the file's, nulls removed
    problems: tuple[str, ...] = ()   # not empty: switched off (load_at_start); its messages are dead-lettered


@dataclass(frozen=True, slots=True)
class InvalidSubscription:
    """One subscription switched off at start: what the log line and the metric report."""

    label: str                 # subscriptions[3] ('Name')
    problems: tuple[str, ...]
    routed: bool               # its events still reach its queue, to be dead-lettered as subscription_invalid


@dataclass(frozen=True, slots=True)
class LoadedSubscriptions:
    """What a function runs with: the subscriptions (switched-off ones carry their problems) and the report."""

    source: str
    subscriptions: list[Subscription]
    invalid: list[InvalidSubscription]
    file_problems: list[str]   # problems of the file as a whole that do not stop it (unknown top-level keys)


def config_path(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get("DESTINATION_CONFIG") or DEFAULT_CONFIG)


UnsetVariables = Literal["error", "keep"]


def load_subscriptions(
    path: str | Path | None = None, environ: Mapping[str, str] = os.environ, *, unset: UnsetVariables = "error"
) -> list[Subscription]:
    """Read and check the subscriptions file (``path``, else DESTINATION_CONFIG, else the packaged one).

    ``unset="keep"`` (dry runs only) leaves a ``${VAR}`` whose variable is not set as written instead
    of reporting it.
    """
    source = Path(path) if path else config_path(environ)
    return parse_subscriptions(read_config(source), str(source), environ, unset=unset)


def read_config(source: Path) -> Any:
    """The subscriptions file's JSON, not yet checked. Raises ConfigError when unreadable or not JSON."""
    try:
        text = source.read_text()
    except OSError as exc:
        raise ConfigError(str(source), [f"cannot read the file: {exc.strerror or exc}"]) from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConfigError(str(source), [f"not valid JSON: {exc}"]) from None


def parse_subscriptions(
    data: Any, source: str = "<config>", environ: Mapping[str, str] = os.environ, *, unset: UnsetVariables = "error"
) -> list[Subscription]:
    """Every subscription of a file without problems; else ConfigError listing every problem (the CLI, tests)."""
    checked, file_problems, unset_names = _check(data, source, environ, unset)
    problems = file_problems + [p for _, found, _ in checked for p in found]
    if problems:
        raise ConfigError(source, problems, unset_names)
    return [sub for _, _, sub in checked if sub is not None]


def load_at_start(path: str | Path | None = None, environ: Mapping[str, str] = os.environ) -> LoadedSubscriptions:
    """The subscriptions a function runs with: a bad subscription never takes down the good ones.

    Raises ConfigError only when the file cannot be read, is not JSON or has no "subscriptions" array. A
    subscription with problems is switched off: kept with its ``problems`` (so the worker dead-letters its
    messages as subscription_invalid), routed by the ingest only when enabled with a known action and a
    trigger that parses; else kept disabled, under a trigger that matches nothing, for the worker's lookup.
    """
    source = str(Path(path) if path else config_path(environ))
    checked, file_problems, _ = _check(read_config(Path(source)), source, environ, "error", at_start=True)
    subscriptions, invalid = [], []
    for label, problems, sub in checked:
        if not problems:
            if sub is not None:
                subscriptions.append(sub)
            continue
        routed = sub is not None and sub.enabled
        invalid.append(InvalidSubscription(label, tuple(problems), routed))
        if sub is not None:
            subscriptions.append(replace(sub, problems=tuple(problems), mapping={}))
    return LoadedSubscriptions(source, subscriptions, invalid, file_problems)


def _check(data: Any, source: str, environ: Mapping[str, str], unset: UnsetVariables, at_start: bool = False
           ) -> tuple[list[tuple[str, list[str], Subscription | None]], list[str], set[str]]:
    """Per subscription (label, problems, Subscription or None), the file's own problems, unset variables.

    The Subscription of one with problems is the one the runtime would route (see ``_parse_one``).
    """
    if not isinstance(data, dict) or not isinstance(data.get("subscriptions"), list):
        raise ConfigError(source, ['the top level must be an object with a "subscriptions" array'])
    items = data["subscriptions"]
    file_problems: list[str] = []
    if len(items) > MAX_SUBSCRIPTIONS:
        file_problems.append(f"{len(items)} subscriptions; at most {MAX_SUBSCRIPTIONS} are allowed (as in Segment)")
    unknown_top = sorted(set(data) - {"subscriptions"})
    if unknown_top:
        file_problems.append(f"unknown top-level key(s): {', '.join(unknown_top)}")
    checked: list[tuple[str, list[str], Subscription | None]] = []
    names: dict[str, list[int]] = {}
    unset_names: set[str] = set()
    for index, item in enumerate(items):
        label = f"subscriptions[{index}]"
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            label += f" ({item['name']!r})"
        found, sub = _parse_one(item, label, environ, unset_names if unset == "error" else None)
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str) and name.strip():
            # Checked for every subscription, also one with other problems: every problem at once.
            if name.strip() in names:
                found.append(f"{label}: the name {name.strip()!r} is used twice; names must be unique")
                for first in names[name.strip()][:1] if at_start else ():
                    # At runtime the first one is switched off too: its messages could be either's.
                    checked[first][1].append(f"{checked[first][0]}: the name {name.strip()!r} is used again by "
                                             f"{label}; names must be unique")
            names.setdefault(name.strip(), []).append(index)
        if index >= MAX_SUBSCRIPTIONS and at_start:   # the file-level problem says it for check-config
            found.append(f"{label}: beyond the limit of {MAX_SUBSCRIPTIONS} subscriptions")
        checked.append((label, found, sub))
    return checked, file_problems, unset_names


def referenced_variables(data: Any) -> dict[str, list[str]]:
    """``${VAR}`` names used by the enabled subscriptions' mappings → the names of those subscriptions."""
    used: dict[str, list[str]] = {}
    items = data.get("subscriptions") if isinstance(data, dict) else None
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and item.get("enabled", True) is True:
            for name in dict.fromkeys(_ENV_REFERENCE.findall(json.dumps(item.get("mapping")))):
                used.setdefault(name, []).append(str(item.get("name")))
    return used


_KEYS = {"name", "enabled", "actionSlug", "trigger", "mapping"}
_NEVER = compile_trigger("false")   # the trigger of a switched-off subscription that cannot route


def _parse_one(item: Any, label: str, environ: Mapping[str, str],
               unset_names: set[str] | None) -> tuple[list[str], Subscription | None]:
    """The problems of one subscription, and its Subscription: when it has no problems, or when it has
    some but can still route (a usable name, a known action, a trigger that parses; disabled when not
    ``enabled: true``, with a trigger that never matches when its own does not parse).

    ``unset_names`` collects the variables that are not set; None keeps their references as written.
    """
    if not isinstance(item, dict):
        return [f"{label}: must be an object"], None
    problems = [f"{label}: unknown key {k!r} (allowed: {', '.join(sorted(_KEYS))})" for k in item if k not in _KEYS]
    name, enabled, slug = item.get("name"), item.get("enabled", True), item.get("actionSlug")
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{label}: needs a non-empty string \"name\"")
    if not isinstance(enabled, bool):
        problems.append(f"{label}: \"enabled\" must be true or false")
    action = ACTIONS.get(slug) if isinstance(slug, str) else None
    if action is None:
        problems.append(f"{label}: unknown actionSlug {slug!r}; expected one of {', '.join(ACTIONS)}")
    trigger = None
    if not isinstance(item.get("trigger"), str):
        problems.append(f"{label}: needs a \"trigger\" string (FQL), e.g. 'type = \"identify\"'")
    else:
        try:
            trigger = compile_trigger(item["trigger"])
        except TriggerSyntaxError as exc:
            problems.append(f"{label}: trigger: {exc}")
    mapping = item.get("mapping", {})
    if not isinstance(mapping, dict):
        problems.append(f"{label}: \"mapping\" must be an object")
        mapping = {}
    if action is not None:
        problems += [f"{label}: mapping: unknown field {k!r} for {action.slug}; fields are {', '.join(action.fields)}"
                     for k in mapping if k not in action.fields]
    if enabled is True:
        mapping = _substitute_env(mapping, environ, f"{label}: mapping", problems, unset_names)
    try:
        validate_mapping({k: v for k, v in mapping.items() if v is not None})
    except MappingError as exc:
        problems += [f"{label}: mapping: {p}" for p in exc.problems]
    if action is None:
        return problems, None
    effective = {**action.default_mapping, **mapping}
    effective = {k: v for k, v in effective.items() if v is not None}
    if enabled:
        problems += [f"{label}: the required field {k!r} has no mapping and no default"
                     for k, f in action.fields.items() if f.required and k not in effective]
        problems += [f"{label}: the required field {k!r} is mapped to an empty string (is the variable it uses empty?)"
                     for k, f in action.fields.items() if f.required and effective.get(k) == ""]
        problems += _constant_value_problems(action, mapping, label)
    if not problems and trigger is not None and isinstance(name, str):   # no problems: name is a string
        return problems, Subscription(name.strip(), enabled, action, trigger, effective)
    if not isinstance(name, str) or not name.strip():
        return problems, None   # its messages cannot name it
    routes = enabled is True and trigger is not None
    return problems, Subscription(name.strip(), routes, action, trigger if routes and trigger else _NEVER, {})


def _substitute_env(value: Any, environ: Mapping[str, str], where: str, problems: list[str],
                    unset_names: set[str] | None) -> Any:
    if isinstance(value, str):
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            # Set but empty is a value (an optional template Parameter left blank): the field resolves
            # to "" and is dropped, so a required one fails per message with a clear payload error.
            if name not in environ:
                if unset_names is not None:
                    unset_names.add(name)
                    problems.append(f"{where}: ${{{name}}} is used but the environment variable {name} is not set")
                return match.group(0)
            return environ[name]
        return _ENV_REFERENCE.sub(replace, value)
    if isinstance(value, dict):
        return {k: _substitute_env(v, environ, f"{where}.{k}", problems, unset_names) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute_env(v, environ, f"{where}[{i}]", problems, unset_names) for i, v in enumerate(value)]
    return value


def _constant_value_problems(action: ActionDefinition, mapping: dict[str, Any], label: str) -> list[str]:
    """Mapped values without a directive are the same for every event: check them against the payload
    rules now (as the worker would, for every message) rather than fail each message later."""
    constants = {k: v for k, v in mapping.items()
                 if k in action.fields and v is not None and v != "" and not _has_directive_or_variable(v)}
    if not constants:
        return []
    try:
        action.payload_model.model_validate(constants)
    except ValidationError as exc:
        return [f"{label}: mapping.{err['loc'][0]}: {constants[err['loc'][0]]!r} does not fit the field: "
                f"{err['msg'].removeprefix('Value error, ')}"
                for err in exc.errors(include_url=False) if err["loc"] and err["loc"][0] in constants]
    return []


def _has_directive_or_variable(value: Any) -> bool:
    if isinstance(value, str):
        return _ENV_REFERENCE.search(value) is not None   # a reference left as written (dry runs)
    if isinstance(value, dict):
        return any(str(k).startswith("@") or _has_directive_or_variable(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_directive_or_variable(v) for v in value)
    return False
