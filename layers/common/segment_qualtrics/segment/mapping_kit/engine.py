"""The directives' registry, and the walks over a mapping that dispatch to them: resolving (index.ts) and
validating (validate.ts and the schema fixtures, collecting every problem).

Each directive (directives.py) registers its resolver and its validator together. Validation messages follow
mapping-kit's wording with a dotted location. Beyond mapping-kit's own validator, this one also reports what
mapping-kit only finds per event at run time (e.g. an @if without "exists"/"blank", a @case operator other
than lower/upper), walks into arrays, rejects unknown keys in a directive's options, and checks @path syntax,
so that a bad config fails when it loads.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from segment_qualtrics.segment.mapping_kit.js import UNDEFINED, is_array, js_type, remove_undefined
from segment_qualtrics.segment.mapping_kit.limits import DirectiveError, MappingError, too_deep, value_depth_exceeds
from segment_qualtrics.segment.mapping_kit.paths import path_problem

Problems = list[str]


@dataclass(frozen=True)
class Directive:
    """One ``@`` directive: how it resolves against an event, and how its argument is checked at load."""

    name: str
    resolve: Callable[[Any, Any], Any]                 # (argument, payload) -> value or UNDEFINED
    validate: Callable[[Any, str, Problems], None]     # (argument, location, problems found so far)


DIRECTIVES: dict[str, Directive] = {}


def register(name: str, resolve: Callable[[Any, Any], Any], validate: Callable[[Any, str, Problems], None]) -> None:
    DIRECTIVES[name] = Directive(name, resolve, validate)


# --------------------------------------------------------------------------------------------------
# Resolution (index.ts)
# --------------------------------------------------------------------------------------------------

def is_directive(value: Any) -> bool:
    """is-directive.ts: an object with an @-key whose other keys (if any) are only ``_metadata``."""
    if not isinstance(value, Mapping):
        return False
    has_directive_key = False
    for key in value:
        if key.startswith("@"):
            has_directive_key = True
        elif key != "_metadata":
            return False
    return has_directive_key


def resolve(mapping: Any, payload: Any) -> Any:
    if isinstance(mapping, Mapping):
        if is_directive(mapping):
            name = next(key for key in mapping if key.startswith("@"))
            directive = DIRECTIVES.get(name)
            if directive is None:
                raise DirectiveError(f"{name} is not a valid directive")
            return directive.resolve(mapping[name], payload)
        return {key: resolve(value, payload) for key, value in mapping.items()}
    if is_array(mapping):
        return [resolve(value, payload) for value in mapping]
    return mapping


def resolve_string(name: str, value: Any, payload: Any) -> str:
    """registerStringDirective: the argument (maybe itself a directive) must resolve to a string."""
    text = resolve(value, payload)
    if not isinstance(text, str):
        raise DirectiveError(f"{name}: expected string, got {js_type(text)}")
    return text


def options(name: str, opts: Any, message: str) -> Mapping[str, Any]:
    if not isinstance(opts, Mapping):
        raise DirectiveError(f"{name} requires {message}")
    return opts


# --------------------------------------------------------------------------------------------------
# Validation: the walk and the checks the directives' validators share
# --------------------------------------------------------------------------------------------------

def join_loc(loc: str, key: str) -> str:
    return f"{loc}.{key}" if loc else key


def place(loc: str) -> str:
    return loc or "(mapping)"


def describe(value: Any) -> str:
    if isinstance(value, Mapping) and any(str(key).startswith("@") for key in value):
        return "a directive"
    kind = js_type(value)
    if kind in ("null", "undefined"):
        return kind
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def quoted(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def check_value(value: Any, loc: str, problems: Problems) -> None:
    """Any mapping value: a JSON value, with directives at any depth of objects and arrays."""
    if isinstance(value, Mapping):
        if any(str(key).startswith("@") for key in value):
            check_directive(value, loc, problems)
        else:
            for key, item in value.items():
                check_value(item, join_loc(loc, str(key)), problems)
    elif is_array(value):
        for index, item in enumerate(value):
            check_value(item, f"{loc}[{index}]", problems)
    elif value is not None and not isinstance(value, (str, bool, int, float)):
        problems.append(f"{place(loc)}: should be a mapping directive or a JSON value, got {describe(value)}")


def check_directive(obj: Mapping[str, Any], loc: str, problems: Problems) -> None:
    keys = [str(key) for key in obj]
    directive_keys = [key for key in keys if key.startswith("@")]
    other_keys = [key for key in keys if not key.startswith("@") and key != "_metadata"]
    if len(directive_keys) > 1 or other_keys:
        # "_metadata" (UI bookkeeping) is the one extra key mapping-kit tolerates beside a directive.
        listed = ", ".join(quoted(key) for key in directive_keys + other_keys)
        problems.append(
            f"{place(loc)}: a directive object must have exactly one key, "
            f"but it has {len(directive_keys) + len(other_keys)}: {listed}"
        )
        return
    name = directive_keys[0]
    directive = DIRECTIVES.get(name)
    if directive is None:
        problems.append(f"{place(loc)}: unknown directive {quoted(name)}")
        return
    directive.validate(obj[name], join_loc(loc, name), problems)


def check_directive_or_string(value: Any, loc: str, problems: Problems, *, is_path: bool = False) -> None:
    if isinstance(value, str):
        if is_path and (reason := path_problem(value)):
            problems.append(f"{place(loc)}: bad path {quoted(value)}: {reason}")
    elif is_directive_like(value):
        check_directive(value, loc, problems)
    else:
        problems.append(f"{place(loc)}: should be a string or a mapping directive, got {describe(value)}")


def is_directive_like(value: Any) -> bool:
    return isinstance(value, Mapping) and any(str(key).startswith("@") for key in value)


def check_options(
    opts: Any,
    loc: str,
    problems: Problems,
    *,
    required: tuple[str, ...] = (),
    optional: tuple[str, ...] = (),
) -> bool:
    """An options object: plain object, no unknown keys, required keys present. False: stop checking."""
    expected = required + optional
    if not isinstance(opts, Mapping) or is_directive_like(opts):
        fields = ", ".join(quoted(key) for key in expected)
        problems.append(f"{place(loc)}: should be an object with {fields}, got {describe(opts)}")
        return False
    for key in opts:
        if key not in expected:
            problems.append(f"{place(loc)}: unknown key {quoted(key)} (expected {', '.join(expected)})")
    for key in required:
        if key not in opts:
            problems.append(f"{place(loc)}: needs {quoted(key)}")
    return True


def check_string(value: Any, loc: str, problems: Problems, *, min_len: int = 0, max_len: int | None = None) -> None:
    if not isinstance(value, str):
        problems.append(f"{place(loc)}: should be a string, got {describe(value)}")
    elif len(value) < min_len:
        problems.append(f"{place(loc)}: should be a string of length {min_len} or greater")
    elif max_len is not None and len(value) > max_len:
        problems.append(f"{place(loc)}: should be a string of length {max_len} or less")


def check_one_of(value: Any, loc: str, problems: Problems, allowed: tuple[str, ...]) -> None:
    # Case-sensitive, because the resolver compares exactly (mapping-kit's validator lower-cases first,
    # so "Encode" passes there and then silently resolves to nothing).
    if value not in allowed:
        problems.append(f"{place(loc)}: should be one of {', '.join(allowed)}, got {quoted(value)}")


def check_boolean(value: Any, loc: str, problems: Problems) -> None:
    if not isinstance(value, bool):
        problems.append(f"{place(loc)}: should be a boolean, got {describe(value)}")


# --------------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------------

def resolve_value(value: Any, event: Mapping[str, Any]) -> Any:
    """Resolve one mapping value against a Segment event; ``UNDEFINED`` if it resolves to nothing."""
    if value_depth_exceeds(event) or value_depth_exceeds(value):
        raise MappingError([too_deep("the event or the mapping")])
    try:
        resolved = resolve(value, event)
    except DirectiveError as error:
        raise MappingError([str(error)]) from None
    return UNDEFINED if resolved is UNDEFINED else remove_undefined(resolved)


def resolve_mapping(mapping: Mapping[str, Any], event: Mapping[str, Any]) -> dict[str, Any]:
    """Resolve every field of ``mapping``; fields that resolve to ``UNDEFINED`` are left out.

    Assumes ``validate_mapping`` accepted the mapping; raises MappingError when a directive cannot be
    resolved against this event (e.g. ``@json`` decode of a string that is not JSON).
    """
    if value_depth_exceeds(event):
        raise MappingError([too_deep("the event")])
    if value_depth_exceeds(mapping):
        raise MappingError([too_deep("the mapping")])
    result: dict[str, Any] = {}
    for field, value in mapping.items():
        try:
            resolved = resolve(value, event)
        except DirectiveError as error:
            raise MappingError([f"{field}: {error}"]) from None
        if resolved is not UNDEFINED:
            result[field] = remove_undefined(resolved)
    return result


def validate_mapping(mapping: Mapping[str, Any], *, where: str = "") -> None:
    """Check a field mapping (field name -> mapping value) once, when the config loads.

    Raises MappingError listing every problem; each names its place, prefixed by ``where``.
    """
    if not isinstance(mapping, Mapping):
        raise MappingError([f"{where or '(mapping)'}: should be an object of fields, got {describe(mapping)}"])
    if value_depth_exceeds(mapping):
        raise MappingError([f"{where or '(mapping)'}: " + too_deep("the mapping")])
    problems: Problems = []
    for field, value in mapping.items():
        field = str(field)
        if field.startswith("@"):
            problems.append(
                f'{join_loc(where, field)}: a field name cannot start with "@"; '
                "a directive goes in the value of a field"
            )
            continue
        check_value(value, join_loc(where, field), problems)
    if problems:
        raise MappingError(problems)
