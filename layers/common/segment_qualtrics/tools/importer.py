"""Import a Segment export: a Qualtrics (Actions) destination's subscriptions → our subscriptions file.

The input is what Segment's Public API answers for "list subscriptions from destination"
(``GET /destinations/{destinationId}/subscriptions``): ``{"data": {"subscriptions": [...]}}``, also
accepted as ``{"subscriptions": [...]}`` or a bare list. Each Segment subscription has ``id``, ``name``,
``actionId``, ``actionSlug``, ``destinationId``, ``enabled``, ``trigger`` (FQL), ``settings`` (the field
mapping; a JSON string in Terraform exports), ``modelId`` (Reverse ETL). ``mapping`` is read when there
is no ``settings``.

What carries over: name, enabled, actionSlug, trigger and the mapping. One difference in meaning is
bridged: in Segment a field missing from the mapping is not sent, while in our file it takes the
action's default, so such fields are written as ``null`` (switched off); fields whose Segment mapping
equals our default are left out. Whatever cannot be carried over (an unknown action, an unknown field, a
directive we do not support, a trigger that does not parse, ...) is reported with the subscription's
name, and the rest is still written. A subscription that would not load as enabled (a required field
without a mapping, a value that does not fit its field) is written disabled, with the reason. The result
is checked by the same loader the functions use. Actions Segment's destination does not have
(``NOT_IN_SEGMENT``: deleteContact) are never in an export; the command line says so.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from segment_qualtrics.destination.actions import ACTIONS, ActionDefinition
from segment_qualtrics.destination.subscriptions import MAX_SUBSCRIPTIONS, ConfigError, parse_subscriptions
from segment_qualtrics.segment.fql import TriggerSyntaxError, compile_trigger
from segment_qualtrics.segment.mapping_kit import UNDEFINED, MappingError, validate_mapping

# Actions of this destination that Segment's Qualtrics (Actions) destination does not have: an export never
# holds them. The import says so once each is registered, so nobody waits for it to appear.
NOT_IN_SEGMENT = {
    "deleteContact": "Segment's Qualtrics destination has no action that deletes a contact, so no export holds "
                     "one; add a deleteContact subscription by hand (docs/delete-contact.md)",
}


def only_here() -> list[str]:
    """What the import cannot bring, because Segment has no such action: one line per registered action."""
    return [f"{slug}: {text}" for slug, text in NOT_IN_SEGMENT.items() if slug in ACTIONS]


@dataclass
class ImportResult:
    config: dict[str, Any]                                   # {"subscriptions": [...]}, ready to write
    not_carried: list[str] = field(default_factory=list)     # what was lost, each naming its subscription
    notes: list[str] = field(default_factory=list)           # what changed on the way, for information
    problems: list[str] = field(default_factory=list)        # the loader's problems with the result (if any)

    @property
    def complete(self) -> bool:
        """Everything carried over and the result loads."""
        return not self.not_carried and not self.problems


class ExportError(ValueError):
    """The input is not a Segment subscriptions export at all."""


def segment_subscriptions(data: Any) -> list[Any]:
    """The subscription objects of an export, whichever of the accepted shapes it has."""
    while isinstance(data, dict) and "subscriptions" not in data and isinstance(data.get("data"), dict | list):
        data = data["data"]   # the Public API's {"data": {...}} envelope (nested once more by some tools)
    if isinstance(data, dict) and isinstance(data.get("subscriptions"), list):
        return data["subscriptions"]
    if isinstance(data, list):
        return data
    raise ExportError('expected {"data": {"subscriptions": [...]}}, {"subscriptions": [...]} or a list '
                      "of Segment subscription objects")


def import_segment(data: Any, environ: Mapping[str, str] = os.environ) -> ImportResult:
    items = segment_subscriptions(data)
    result = ImportResult({"subscriptions": []})
    names: set[str] = set()
    for index, item in enumerate(items):
        label = _label(item, index)
        converted = _convert(item, label, result)
        if converted is None or not _loads(converted, label, environ, result):
            continue
        if len(result.config["subscriptions"]) == MAX_SUBSCRIPTIONS:
            result.not_carried.append(f"{label}: not imported: the file holds at most {MAX_SUBSCRIPTIONS} "
                                      "subscriptions (as in Segment)")
            continue
        converted["name"] = _unique(converted["name"], names, label, result)
        result.config["subscriptions"].append(converted)
    try:
        parse_subscriptions(result.config, "the imported file", environ)
    except ConfigError as exc:
        result.problems = exc.problems
    return result


def _label(item: Any, index: int) -> str:
    name = item.get("name") if isinstance(item, dict) else None
    ident = item.get("id") if isinstance(item, dict) else None
    label = f"subscription {index + 1}"
    if isinstance(name, str) and name.strip():
        label += f" {name.strip()!r}"
    if isinstance(ident, str) and ident:
        label += f" (id {ident})"
    return label


def _convert(item: Any, label: str, result: ImportResult) -> dict[str, Any] | None:
    """One Segment subscription → ours, or None when it cannot be carried over at all."""
    if not isinstance(item, dict):
        result.not_carried.append(f"{label}: not imported: not an object")
        return None
    action = _action(item.get("actionSlug"), label, result)
    if action is None:
        return None
    trigger = item.get("trigger")
    if not isinstance(trigger, str) or not trigger.strip():
        result.not_carried.append(f"{label}: not imported: it has no trigger")
        return None
    try:
        compile_trigger(trigger)
    except TriggerSyntaxError as exc:
        result.not_carried.append(f"{label}: not imported: its trigger does not parse here: {exc}")
        return None
    if item.get("modelId"):
        result.notes.append(f"{label}: a Reverse ETL subscription (modelId {item['modelId']}); this "
                            "destination receives events only, so its trigger applies to events")
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        name = f"{action.slug} {item.get('id') or ''}".strip()
        result.notes.append(f"{label}: no name in the export; named {name!r}")
    enabled = item.get("enabled")
    if not isinstance(enabled, bool):
        result.notes.append(f"{label}: \"enabled\" is missing or not true/false; imported disabled")
        enabled = False
    return {"name": name.strip(), "enabled": enabled, "actionSlug": action.slug, "trigger": trigger,
            "mapping": _mapping(item, action, label, result)}


def _action(slug: Any, label: str, result: ImportResult) -> ActionDefinition | None:
    if isinstance(slug, str) and slug in ACTIONS:
        return ACTIONS[slug]
    by_lower = {s.lower(): a for s, a in ACTIONS.items()}
    if isinstance(slug, str) and slug.lower() in by_lower:
        action = by_lower[slug.lower()]
        result.notes.append(f"{label}: actionSlug {slug!r} read as {action.slug!r}")
        return action
    result.not_carried.append(f"{label}: not imported: unknown actionSlug {slug!r} "
                              f"(this destination has {', '.join(ACTIONS)})")
    return None


def _mapping(item: dict[str, Any], action: ActionDefinition, label: str, result: ImportResult) -> dict[str, Any]:
    settings = item.get("settings", item.get("mapping"))
    if isinstance(settings, str):   # Terraform's segment_destination_subscription keeps it as JSON text
        try:
            settings = json.loads(settings)
        except ValueError:
            result.not_carried.append(f"{label}: its settings are not valid JSON; no field mapping imported")
            settings = {}
    if settings is None:
        settings = {}
    if not isinstance(settings, dict):
        result.not_carried.append(f"{label}: its settings are not an object; no field mapping imported")
        settings = {}
    mapping: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in settings.items():
        if key not in action.fields:
            what = "a Segment-internal setting" if key.startswith("__segment") else "an unknown field"
            result.not_carried.append(f"{label}: {key!r} not imported: {what} for {action.slug}")
            continue
        try:
            validate_mapping({key: value})
        except MappingError as exc:
            result.not_carried.append(f"{label}: field {key!r} not imported (switched off): "
                                      f"{'; '.join(exc.problems)}")
            dropped.append(key)
            continue
        if "${" in json.dumps(value):
            result.notes.append(f"{label}: field {key!r} contains \"${{\", which our file reads as an "
                                "environment variable reference")
        mapping[key] = value
    _note_foreign_workflow_url(mapping.get("workflowUrl"), label, result)
    # Segment sends nothing for a field its mapping lacks; our file would use the default: switch it off.
    # A field mapped exactly as our default needs no entry.
    written = {k: v for k, v in mapping.items() if action.fields[k].default != v}
    unmapped = [k for k, f in action.fields.items()
                if k not in mapping and k not in dropped and f.default is not UNDEFINED]
    if unmapped:
        result.notes.append(f"{label}: not mapped in Segment, so switched off (null) here too: {', '.join(unmapped)}")
    return {**written, **dict.fromkeys(dropped + unmapped)}


def _note_foreign_workflow_url(url: Any, label: str, result: ImportResult) -> None:
    from segment_qualtrics.adapters.qualtrics import (
        token_url_refusal,  # the workers' rule (requests: only when there is a URL to check)
    )

    problem = token_url_refusal(url) if isinstance(url, str) and url else None
    if problem:
        result.notes.append(f"{label}: the workflowUrl may not receive the API token ({problem}): the workers "
                            "send it only to https://qualtrics.com or a subdomain, or QUALTRICS_BASE_URL's origin, "
                            "so they refuse it (workflow_url_not_allowed) unless QUALTRICS_BASE_URL points there")


def _unique(name: str, taken: set[str], label: str, result: ImportResult) -> str:
    unique, n = name, 2
    while unique in taken:
        unique, n = f"{name} ({n})", n + 1
    if unique != name:
        result.notes.append(f"{label}: renamed {unique!r}: names must be unique here")
    taken.add(unique)
    return unique


def _loads(converted: dict[str, Any], label: str, environ: Mapping[str, str], result: ImportResult) -> bool:
    """Check the subscription with the loader; disable it (with the reason) if it loads only that way."""
    problems = _problems({"subscriptions": [converted]}, environ)
    if problems and converted["enabled"]:
        result.not_carried.append(f"{label}: imported disabled, as it cannot run as it is: {_reasons(problems)}")
        converted["enabled"] = False
        problems = _problems({"subscriptions": [converted]}, environ)
    if problems:
        result.not_carried.append(f"{label}: not imported: {_reasons(problems)}")
        return False
    return True


def _reasons(problems: list[str]) -> str:
    return "; ".join(p.split(": ", 1)[-1] for p in problems)   # without the "subscriptions[0] (...)" prefix


def _problems(config: dict[str, Any], environ: Mapping[str, str]) -> list[str]:
    try:
        parse_subscriptions(config, "import", environ)
    except ConfigError as exc:
        return exc.problems
    return []
