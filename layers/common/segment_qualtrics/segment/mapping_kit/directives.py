"""Segment mapping-kit in pure Python: resolve a subscription's field mapping against a Segment event.

Behaviour follows Segment's actions-core (segmentio/action-destinations, ``packages/core/src``):
``mapping-kit/index.ts`` (the directives), ``mapping-kit/validate.ts`` plus the ``schema-fixtures``
(validation), ``mapping-kit/flatten.ts``, ``mapping-kit/placeholders.ts`` (``@template``),
``get.ts`` (path lookup) and ``remove-undefined.ts``.

A mapping value is either a raw JSON value (returned as is; objects and arrays are walked so that
directives nested in them are resolved) or a directive: an object with one ``@``-prefixed key, such as
``{"@path": "$.traits.email"}``. JavaScript's ``undefined`` ("resolved to nothing") is ``UNDEFINED``;
it is dropped from objects at the end, as ``JSON.stringify`` would drop it.

Where JavaScript semantics leak into the results (truthiness, ``String(x)``, ``JSON.stringify``,
``a && a[key]`` in the path lookup), they are reproduced on purpose so that a mapping copied from
Segment gives the same payload here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from functools import lru_cache
from typing import Any, Final

__all__ = [
    "UNDEFINED",
    "MappingError",
    "compile_path",
    "resolve_mapping",
    "resolve_value",
    "validate_mapping",
]


class _Undefined:
    """Type of ``UNDEFINED``: falsy, a singleton that survives copy and pickle."""

    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "UNDEFINED"


UNDEFINED: Final = _Undefined()

# mapping-kit's @replace limits (index.ts MAX_PATTERN_LENGTH / MAX_REPLACEMENT_LENGTH).
MAX_PATTERN_LENGTH: Final = 10
MAX_REPLACEMENT_LENGTH: Final = 10


# The longest text a directive may build from an event: the ingest's MAX_EVENT_BYTES (256 KiB), since nothing
# an action sends needs more than the largest event. The directives whose output can far outgrow their input
# stop past it with a MappingError (invalid_payload) instead of filling the worker's memory: @template (a
# placeholder repeated, or a long field), @replace ($` and $' insert the text around each match: quadratic),
# @flatten (every key repeats its parents' keys). @merge of a string (one member per character) takes at most
# MAX_MERGED_STRING_CHARS characters.
MAX_TEXT_CHARS: Final = 256 * 1024
MAX_MERGED_STRING_CHARS: Final = 4096


def _too_long(what: str) -> str:
    return f"{what} would be longer than {MAX_TEXT_CHARS} characters"


# The deepest event (and mapping) the resolver walks. The helpers below recurse on values, so depth is
# bounded here rather than by Python's recursion limit: the ingest caps JSON depth when it accepts an
# event, but a DLQ redrive or an old message may carry a deeper one, and a worker must be safe on its own.
# An event (or an @json-decoded value) deeper than this is refused as a MappingError (invalid_payload).
MAX_VALUE_DEPTH: Final = 64


def value_depth_exceeds(value: Any, limit: int = MAX_VALUE_DEPTH) -> bool:
    """True when ``value`` nests objects/arrays more than ``limit`` levels deep. Iterative: any depth is safe."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _too_deep(what: str) -> str:
    return f"{what} is nested deeper than {MAX_VALUE_DEPTH} levels"


class MappingError(ValueError):
    """A mapping is invalid, or a directive cannot be resolved against an event.

    ``problems`` lists every problem found, each starting with where it is, for example
    ``'email: unknown directive "@pathh"'``.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems: list[str] = list(problems)
        super().__init__("; ".join(self.problems))


class _DirectiveError(Exception):
    """Raised while resolving; turned into a MappingError that names the field."""


# --------------------------------------------------------------------------------------------------
# JavaScript semantics that mapping-kit results depend on
# --------------------------------------------------------------------------------------------------


def _is_array(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def _js_truthy(value: Any) -> bool:
    """JavaScript truthiness: [] and {} are truthy, "" / 0 / null / undefined are not."""
    if value is None or value is UNDEFINED:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value == value and value != 0  # NaN is falsy
    if isinstance(value, str):
        return value != ""
    return True


def _js_type(value: Any) -> str:
    """mapping-kit's realTypeOf(), used in error messages."""
    if value is UNDEFINED:
        return "undefined"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if _is_array(value):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _js_number(value: int | float) -> str:
    """Number.prototype.toString(): 1.0 -> "1", 1e-7 -> "1e-7", 1e21 -> "1e+21"."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    # repr() gives the shortest round-tripping digits, as JavaScript does; only the layout differs.
    _, digit_tuple, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    k = len(digits)
    n = k + int(exponent)  # value = 0.digits * 10**n
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = f"{digits[:n]}.{digits[n:]}"
    elif -6 < n <= 0:
        text = "0." + "0" * -n + digits
    else:
        mantissa = digits[0] + (f".{digits[1:]}" if k > 1 else "")
        text = f"{mantissa}e{'+' if n - 1 >= 0 else '-'}{abs(n - 1)}"
    return sign + text


def _js_string(value: Any) -> str:
    """String(value), as used by @template and @replace."""
    if isinstance(value, str):
        return value
    if value is UNDEFINED:
        return "undefined"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _js_number(value)
    if _is_array(value):
        # Array.prototype.join: null and undefined items become "".
        return ",".join("" if item is None or item is UNDEFINED else _js_string(item) for item in value)
    return "[object Object]"


def _js_json(value: Any) -> Any:
    """JSON.stringify(value): compact, undefined object members dropped; UNDEFINED for undefined."""
    if value is UNDEFINED:
        return UNDEFINED
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _js_number(value) if math.isfinite(value) else "null"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if _is_array(value):
        items = (_js_json(item) for item in value)
        return "[" + ",".join("null" if item is UNDEFINED else item for item in items) + "]"
    if isinstance(value, Mapping):
        members = ((key, _js_json(item)) for key, item in value.items())
        return (
            "{"
            + ",".join(
                f"{json.dumps(str(key), ensure_ascii=False)}:{text}" for key, text in members if text is not UNDEFINED
            )
            + "}"
        )
    return UNDEFINED  # functions and the like: JSON.stringify leaves them out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"unexpected token {name}")  # JSON.parse has no NaN / Infinity


def _js_loosely_equals_empty_string(value: Any) -> bool:
    """``value == ''`` with JavaScript's loose equality (what ``@if`` ``blank`` tests)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value == 0
    if isinstance(value, str):
        return value == ""
    if _is_array(value):
        # Compared through Array.prototype.toString(): [] and [null] and [""] are "".
        return _js_string(value) == ""
    return False


# --------------------------------------------------------------------------------------------------
# Paths (get.ts)
# --------------------------------------------------------------------------------------------------

# get.ts splits at every ".", at "[" followed by a quote or a digit, and at "]" run preceded by a quote
# or digit, then drops empty parts and every quote character. So "a.b[0]['c d']" -> a, b, 0, c d, while
# "[txt] non" stays one key.
_PATH_SPLIT: Final = re.compile(r"""\[(?=["'\d])|\.|(?<=["'\d])\]+""")
_QUOTES: Final = re.compile(r"""['"]""")


@lru_cache(maxsize=4096)
def _compile_keys(path: str) -> tuple[str, ...]:
    """Split a get.ts path into keys; () is the whole object ("" and "." both mean the root)."""
    if path in ("", "."):
        return ()
    return tuple(_QUOTES.sub("", part) for part in _PATH_SPLIT.split(path) if part)


@lru_cache(maxsize=4096)
def compile_path(path: str) -> tuple[str, ...]:
    """Keys of an ``@path`` string, e.g. ``"$.a[0].b"`` -> ``("a", "0", "b")``; ``"$."`` -> ``()``."""
    # mapping-kit removes the first "$." wherever it is (String.replace), not only a leading one.
    return _compile_keys(path.replace("$.", "", 1))


def _array_index(key: str, length: int) -> int | None:
    # JavaScript only treats canonical non-negative integers as indexes: "01" or "-1" are plain keys.
    if key.isdigit() and (key == "0" or not key.startswith("0")) and key.isascii():
        index = int(key)
        if index < length:
            return index
    return None


def _member(container: Any, key: str) -> Any:
    """``container[key]`` for JSON values, with JavaScript's array and string members."""
    if isinstance(container, Mapping):
        return container.get(key, UNDEFINED)
    if _is_array(container) or isinstance(container, str):
        if key == "length":
            return len(container)
        index = _array_index(key, len(container))
        return UNDEFINED if index is None else container[index]
    return UNDEFINED  # numbers and booleans have no JSON members


def _get(data: Any, keys: tuple[str, ...]) -> Any:
    for key in keys:
        # get.ts reduces with `prev && prev[key]`: a falsy value part-way (null, 0, "", false) is the
        # result itself, not undefined. Kept for parity, e.g. $.traits.email is null when traits is null.
        if not _js_truthy(data):
            return data
        data = _member(data, key)
    return data


# --------------------------------------------------------------------------------------------------
# Resolution (index.ts)
# --------------------------------------------------------------------------------------------------

_Directive = Callable[[Any, Any], Any]
_DIRECTIVES: dict[str, _Directive] = {}


def _directive(name: str) -> Callable[[_Directive], _Directive]:
    def register(fn: _Directive) -> _Directive:
        _DIRECTIVES[name] = fn
        return fn

    return register


def _is_directive(value: Any) -> bool:
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


def _resolve(mapping: Any, payload: Any) -> Any:
    if isinstance(mapping, Mapping):
        if _is_directive(mapping):
            name = next(key for key in mapping if key.startswith("@"))
            directive = _DIRECTIVES.get(name)
            if directive is None:
                raise _DirectiveError(f"{name} is not a valid directive")
            return directive(mapping[name], payload)
        return {key: _resolve(value, payload) for key, value in mapping.items()}
    if _is_array(mapping):
        return [_resolve(value, payload) for value in mapping]
    return mapping


def _resolve_string(name: str, value: Any, payload: Any) -> str:
    """registerStringDirective: the argument (maybe itself a directive) must resolve to a string."""
    text = _resolve(value, payload)
    if not isinstance(text, str):
        raise _DirectiveError(f"{name}: expected string, got {_js_type(text)}")
    return text


def _opts(name: str, opts: Any, message: str) -> Mapping[str, Any]:
    if not isinstance(opts, Mapping):
        raise _DirectiveError(f"{name} requires {message}")
    return opts


@_directive("@path")
def _path(value: Any, payload: Any) -> Any:
    return _get(payload, compile_path(_resolve_string("@path", value, payload)))


@_directive("@literal")
def _literal(value: Any, payload: Any) -> Any:
    return _resolve(value, payload)


@_directive("@if")
def _if(opts: Any, payload: Any) -> Any:
    opts = _opts("@if", opts, 'an object with an "exists" key')
    # The presence test is on the raw values, so "exists": false/null/0/"" counts as missing.
    if not _js_truthy(opts.get("exists")) and not _js_truthy(opts.get("blank")):
        raise _DirectiveError('@if requires an "exists" key or a "blank" key')
    if "exists" in opts:
        value = _resolve(opts["exists"], payload)
        condition = value is not UNDEFINED and value is not None
    else:
        value = _resolve(opts["blank"], payload)
        condition = value is not UNDEFINED and value is not None and not _js_loosely_equals_empty_string(value)
    if condition and "then" in opts:
        return _resolve(opts["then"], payload)
    # mapping-kit tests `opts.else` for truthiness: "else": false/0/""/null leaves the field out.
    # {"@literal": false} is the way to get a falsy else value.
    if not condition and _js_truthy(opts.get("else")):
        return _resolve(opts["else"], payload)
    return UNDEFINED


@_directive("@case")
def _case(opts: Any, payload: Any) -> Any:
    opts = _opts("@case", opts, 'an object with a "operator" key')
    operator = opts.get("operator")
    if not _js_truthy(operator):
        raise _DirectiveError('@case requires a "operator" key')
    if not _js_truthy(opts.get("value")):
        return UNDEFINED
    value = _resolve(opts["value"], payload)
    if not isinstance(value, str):
        return value  # non-strings pass through unchanged
    if operator == "lower":
        return value.lower()
    if operator == "upper":
        return value.upper()
    raise _DirectiveError('operator key should have a value of "lower" or "upper"')


def _js_replacement(replacement: str) -> Callable[[re.Match[str]], str]:
    """String.prototype.replace with a string: $$, $&, $` and $' are special, all else is literal."""

    def expand(match: re.Match[str]) -> str:
        if "$" not in replacement:
            return replacement
        out: list[str] = []
        i = 0
        while i < len(replacement):
            char = replacement[i]
            follower = replacement[i + 1 : i + 2]
            if char == "$" and follower in ("$", "&", "`", "'"):
                if follower == "$":
                    out.append("$")
                elif follower == "&":
                    out.append(match.group(0))
                elif follower == "`":
                    out.append(match.string[: match.start()])
                else:
                    out.append(match.string[match.end() :])
                i += 2
            else:
                out.append(char)
                i += 1
        return "".join(out)

    return expand


def _perform_replace(value: str, pattern: str, replacement: str, *, is_global: bool, ignorecase: bool) -> str:
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise _DirectiveError(f'@replace requires a "pattern" less than {MAX_PATTERN_LENGTH} characters')
    if len(replacement) > MAX_REPLACEMENT_LENGTH:
        raise _DirectiveError(f'@replace requires a "replacement" less than {MAX_REPLACEMENT_LENGTH} characters')
    # mapping-kit escapes the pattern: it is always matched literally, never as a regular expression.
    regex = re.compile(re.escape(pattern), re.IGNORECASE if ignorecase else 0)
    expand = _js_replacement(replacement)
    length = len(value)

    def capped(match: re.Match[str]) -> str:
        nonlocal length
        text = expand(match)
        length += len(text) - (match.end() - match.start())
        if length > MAX_TEXT_CHARS:   # stops at once: "$`$'" on a long value is quadratic otherwise
            raise _DirectiveError("@replace: " + _too_long("the result"))
        return text

    return regex.sub(capped, value, count=0 if is_global else 1)


@_directive("@replace")
def _replace(opts: Any, payload: Any) -> Any:
    opts = _opts("@replace", opts, 'an object with a "pattern" key')
    pattern = opts.get("pattern")
    if not _js_truthy(pattern):
        raise _DirectiveError('@replace requires a "pattern" key')
    # Defaults: null/missing replacement is "", matching is case sensitive and global.
    replacement = "" if opts.get("replacement") is None else opts["replacement"]
    pattern2 = opts.get("pattern2")
    replacement2 = "" if opts.get("replacement2") is None else opts["replacement2"]
    ignorecase = False if opts.get("ignorecase") is None else opts["ignorecase"]
    is_global = True if opts.get("global") is None else opts["global"]
    if not _js_truthy(opts.get("value")):
        return UNDEFINED
    value = _resolve(opts["value"], payload)
    if isinstance(value, (bool, int, float)):
        value = _js_string(value)  # booleans and numbers are replaced in their string form
    if not (
        isinstance(value, str)
        and isinstance(pattern, str)
        and isinstance(replacement, str)
        and isinstance(ignorecase, bool)
        and isinstance(is_global, bool)
    ):
        return ""  # e.g. a missing or null value: mapping-kit answers "", not undefined
    result = _perform_replace(value, pattern, replacement, is_global=is_global, ignorecase=ignorecase)
    if _js_truthy(pattern2) and isinstance(pattern2, str) and isinstance(replacement2, str):
        result = _perform_replace(result, pattern2, replacement2, is_global=is_global, ignorecase=ignorecase)
    return result


@_directive("@arrayPath")
def _array_path(data: Any, payload: Any) -> Any:
    if not _is_array(data):
        raise _DirectiveError(f"@arrayPath expected array, got {_js_type(data)}")
    path = data[0] if len(data) > 0 else UNDEFINED
    item_shape = data[1] if len(data) > 1 else UNDEFINED
    root = _get(payload, compile_path(path)) if isinstance(path, str) else _resolve(path, payload)
    # With a non-empty shape, each item (a lone object counts as a one-item array) is resolved
    # against that shape, the item being the payload of the shape's directives.
    if (isinstance(root, Mapping) or _is_array(root)) and isinstance(item_shape, Mapping) and item_shape:
        items = root if _is_array(root) else [root]
        return [_resolve(item_shape, item) for item in items]
    return root


# {{{path}}} or {{path}}, in one scan: at each place the triple form is tried first.
_PLACEHOLDER: Final = re.compile(r"\{\{\{([^}]+)\}\}\}|\{\{([^}]+)\}\}")


def _render(template: str, payload: Any) -> str:
    """placeholders.ts: {{{path}}} and {{path}}, each replaced by String(value ?? "") (no HTML escaping).

    One pass, unlike placeholders.ts (a {{{path}}} pass, then a {{path}} pass over its result): event text
    inserted is never filled in again, so an event cannot make its own text expand (a note of "{{pad}}" x
    10,000 would be 10,000 copies of pad). The result stops past MAX_TEXT_CHARS.
    """
    length = len(template)

    def replace(match: re.Match[str]) -> str:
        nonlocal length
        value = _get(payload, _compile_keys((match.group(1) or match.group(2)).strip()))
        text = "" if value is None or value is UNDEFINED else _js_string(value)
        length += len(text) - (match.end() - match.start())
        if length > MAX_TEXT_CHARS:
            raise _DirectiveError("@template: " + _too_long("the rendered text"))
        return text

    return _PLACEHOLDER.sub(replace, template)


@_directive("@template")
def _template(value: Any, payload: Any) -> Any:
    return _render(_resolve_string("@template", value, payload), payload)


def _flatten(value: Any, prefix: str, separator: str, omit_arrays: bool, budget: list[int]) -> dict[str, Any]:
    """flatten.ts: nested keys joined by separator; a scalar at the top becomes {"": value}.

    ``budget`` holds the characters the keys may still take: each key repeats its parents' keys, so a long
    key over many members would make far more text than the event holds.
    """
    if isinstance(value, Mapping) or (not omit_arrays and _is_array(value)):
        entries = value.items() if isinstance(value, Mapping) else ((str(i), v) for i, v in enumerate(value))
        flat: dict[str, Any] = {}
        for key, item in entries:
            key = f"{prefix}{separator}{key}" if prefix else key
            budget[0] -= len(key)
            if budget[0] < 0:
                raise _DirectiveError("@flatten: " + _too_long("the keys"))
            flat.update(_flatten(item, key, separator, omit_arrays, budget))
        return flat
    return {prefix: value}


@_directive("@flatten")
def _flatten_directive(opts: Any, payload: Any) -> Any:
    opts = _opts("@flatten", opts, 'an object with a "separator" key')
    if not _js_truthy(opts.get("separator")):
        raise _DirectiveError('@flatten requires a "separator" key')
    separator = _resolve(opts["separator"], payload)
    if not isinstance(separator, str):
        raise _DirectiveError("@flatten requires a string separator")
    value = _resolve(opts.get("value", UNDEFINED), payload)
    return _flatten(value, "", separator, _js_truthy(opts.get("omitArrays")), [MAX_TEXT_CHARS])


@_directive("@json")
def _json(opts: Any, payload: Any) -> Any:
    opts = _opts("@json", opts, 'an object with a "value" key')
    if not _js_truthy(opts.get("mode")):
        raise _DirectiveError('@json requires a "mode" key')
    if not _js_truthy(opts.get("value")):
        raise _DirectiveError('@json requires a "value" key')
    value = _resolve(opts["value"], payload)
    if opts["mode"] == "encode":
        return _js_json(value)
    if opts["mode"] == "decode":
        if not isinstance(value, str):
            return value
        try:
            decoded = json.loads(value, parse_constant=_reject_constant)
        except ValueError as error:
            raise _DirectiveError(f"@json: cannot decode value: {error}") from None
        except RecursionError:
            raise _DirectiveError("@json: " + _too_deep("the decoded value")) from None
        if value_depth_exceeds(decoded):
            raise _DirectiveError("@json: " + _too_deep("the decoded value"))
        return decoded
    return UNDEFINED


def _assign(target: dict[str, Any], source: Any) -> None:
    """Object.assign(target, source) for JSON values."""
    if isinstance(source, Mapping):
        target.update(source)
    elif isinstance(source, str) and len(source) > MAX_MERGED_STRING_CHARS:
        # One member per character: a long string would be hundreds of bytes of memory per character.
        raise _DirectiveError(f"@merge: a string of more than {MAX_MERGED_STRING_CHARS} characters to merge")
    elif _is_array(source) or isinstance(source, str):
        target.update((str(i), item) for i, item in enumerate(source))
    # null, undefined, numbers and booleans add nothing


@_directive("@merge")
def _merge(opts: Any, payload: Any) -> Any:
    opts = _opts("@merge", opts, 'an object with an "objects" key and a "direction" key')
    if not _js_truthy(opts.get("direction")):
        raise _DirectiveError('@merge requires a "direction" key')
    direction = _resolve(opts["direction"], payload)
    if not _js_truthy(opts.get("objects")):
        raise _DirectiveError('@merge requires a "objects" key')
    if not _is_array(opts["objects"]):
        raise _DirectiveError(f"@merge: expected opts.array, got {_js_type(opts['objects'])}")
    objects = [_resolve(item, payload) for item in opts["objects"]]
    if direction == "left":
        objects.reverse()  # left: the first object wins; right (default): the last one wins
    merged: dict[str, Any] = {}
    for item in objects:
        _assign(merged, item)
    return merged


@_directive("@transform")
def _transform(opts: Any, payload: Any) -> Any:
    opts = _opts("@transform", opts, 'an object with an "apply" key and a "mapping" key')
    if not _js_truthy(opts.get("mapping")):
        raise _DirectiveError('@transform requires a "mapping" key')
    if not _js_truthy(opts.get("apply")):
        raise _DirectiveError('@transform requires a "apply" key')
    if not isinstance(opts["apply"], Mapping):
        raise _DirectiveError('@transform "apply" key should be an object')
    if not isinstance(payload, Mapping):
        raise _DirectiveError(f"data must be an object, got {_js_type(payload)}")
    # "apply" builds a new payload (only its own keys) that "mapping" is then resolved against.
    new_payload = _remove_undefined(_resolve(opts["apply"], payload))
    return _resolve(opts["mapping"], new_payload)


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _drop_nulls(item) for key, item in value.items() if item is not None}
    if _is_array(value):
        return [_drop_nulls(item) for item in value]
    return value


@_directive("@excludeWhenNull")
def _exclude_when_null(value: Any, payload: Any) -> Any:
    resolved = _resolve(value, payload)
    if resolved is None:
        return UNDEFINED
    # The current schema fixtures also drop null members at any depth of a resolved object.
    return _drop_nulls(resolved)


def _remove_undefined(value: Any) -> Any:
    """remove-undefined.ts, then JSON.stringify's rule for arrays (undefined items become null).

    It also copies every object and array, so the result never shares structure with the event.
    """
    if isinstance(value, Mapping):
        return {key: _remove_undefined(item) for key, item in value.items() if item is not UNDEFINED}
    if _is_array(value):
        return [None if item is UNDEFINED else _remove_undefined(item) for item in value]
    return value


def resolve_value(value: Any, event: Mapping[str, Any]) -> Any:
    """Resolve one mapping value against a Segment event; ``UNDEFINED`` if it resolves to nothing."""
    if value_depth_exceeds(event) or value_depth_exceeds(value):
        raise MappingError([_too_deep("the event or the mapping")])
    try:
        resolved = _resolve(value, event)
    except _DirectiveError as error:
        raise MappingError([str(error)]) from None
    return UNDEFINED if resolved is UNDEFINED else _remove_undefined(resolved)


def resolve_mapping(mapping: Mapping[str, Any], event: Mapping[str, Any]) -> dict[str, Any]:
    """Resolve every field of ``mapping``; fields that resolve to ``UNDEFINED`` are left out.

    Assumes ``validate_mapping`` accepted the mapping; raises MappingError when a directive cannot be
    resolved against this event (e.g. ``@json`` decode of a string that is not JSON).
    """
    if value_depth_exceeds(event):
        raise MappingError([_too_deep("the event")])
    if value_depth_exceeds(mapping):
        raise MappingError([_too_deep("the mapping")])
    result: dict[str, Any] = {}
    for field, value in mapping.items():
        try:
            resolved = _resolve(value, event)
        except _DirectiveError as error:
            raise MappingError([f"{field}: {error}"]) from None
        if resolved is not UNDEFINED:
            result[field] = _remove_undefined(resolved)
    return result


# --------------------------------------------------------------------------------------------------
# Validation (validate.ts and the schema fixtures), collecting every problem
# --------------------------------------------------------------------------------------------------
#
# Messages follow mapping-kit's wording with a dotted location. Beyond mapping-kit's own validator,
# this one also reports what mapping-kit only finds per event at run time (e.g. an @if without
# "exists"/"blank", a @case operator other than lower/upper), walks into arrays, rejects unknown keys
# in a directive's options, and checks @path syntax, so that a bad config fails when it loads.

_Problems = list[str]
_Validator = Callable[[Any, str, _Problems], None]
_VALIDATORS: dict[str, _Validator] = {}


def _validator(name: str) -> Callable[[_Validator], _Validator]:
    def register(fn: _Validator) -> _Validator:
        _VALIDATORS[name] = fn
        return fn

    return register


def _join(loc: str, key: str) -> str:
    return f"{loc}.{key}" if loc else key


def _at(loc: str) -> str:
    return loc or "(mapping)"


def _describe(value: Any) -> str:
    if isinstance(value, Mapping) and any(str(key).startswith("@") for key in value):
        return "a directive"
    kind = _js_type(value)
    if kind in ("null", "undefined"):
        return kind
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def _quoted(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _check_value(value: Any, loc: str, problems: _Problems) -> None:
    """Any mapping value: a JSON value, with directives at any depth of objects and arrays."""
    if isinstance(value, Mapping):
        if any(str(key).startswith("@") for key in value):
            _check_directive(value, loc, problems)
        else:
            for key, item in value.items():
                _check_value(item, _join(loc, str(key)), problems)
    elif _is_array(value):
        for index, item in enumerate(value):
            _check_value(item, f"{loc}[{index}]", problems)
    elif value is not None and not isinstance(value, (str, bool, int, float)):
        problems.append(f"{_at(loc)}: should be a mapping directive or a JSON value, got {_describe(value)}")


def _check_directive(obj: Mapping[str, Any], loc: str, problems: _Problems) -> None:
    keys = [str(key) for key in obj]
    directive_keys = [key for key in keys if key.startswith("@")]
    other_keys = [key for key in keys if not key.startswith("@") and key != "_metadata"]
    if len(directive_keys) > 1 or other_keys:
        # "_metadata" (UI bookkeeping) is the one extra key mapping-kit tolerates beside a directive.
        listed = ", ".join(_quoted(key) for key in directive_keys + other_keys)
        problems.append(
            f"{_at(loc)}: a directive object must have exactly one key, "
            f"but it has {len(directive_keys) + len(other_keys)}: {listed}"
        )
        return
    name = directive_keys[0]
    validator = _VALIDATORS.get(name)
    if validator is None:
        problems.append(f"{_at(loc)}: unknown directive {_quoted(name)}")
        return
    validator(obj[name], _join(loc, name), problems)


def _path_problem(path: str) -> str | None:
    """Paths that mapping-kit accepts but that can never mean what was written."""
    if "{{" in path or "}}" in path:
        return "template placeholders do not work in a path; use @template"
    if path.startswith("$") and not path.startswith("$."):
        return 'a path starts with "$." (or has no "$" at all)'
    rest = path.replace("$.", "", 1)
    if rest in ("", "."):
        return None  # the whole event
    if ".." in rest or path.startswith("$.."):
        return 'recursive descent ("..") is not supported'
    i = 0
    while i < len(rest):
        if rest[i] == "[":
            inner = rest[i + 1 : i + 2]
            if inner in ("'", '"'):
                end = rest.find(inner + "]", i + 2)
                if end < 0:
                    return "unclosed bracket"
                if "." in rest[i + 2 : end]:
                    return 'a key containing "." cannot be reached: mapping-kit splits paths at every "."'
                i = end + 2
                continue
            if inner.isdigit():
                end = i + 1
                while end < len(rest) and rest[end].isdigit():
                    end += 1
                if rest[end : end + 1] != "]":
                    return "array indexes are whole numbers, as in [0]"
                i = end + 1
                continue
            if inner in ("*", "?", "-", ":"):
                return "only plain keys and [n] indexes are supported (no wildcards, filters or slices)"
        i += 1
    if "*" in compile_path(path):
        return 'wildcards ("*") are not supported'
    return None


def _check_directive_or_string(value: Any, loc: str, problems: _Problems, *, is_path: bool = False) -> None:
    if isinstance(value, str):
        if is_path and (reason := _path_problem(value)):
            problems.append(f"{_at(loc)}: bad path {_quoted(value)}: {reason}")
    elif _is_directive_like(value):
        _check_directive(value, loc, problems)
    else:
        problems.append(f"{_at(loc)}: should be a string or a mapping directive, got {_describe(value)}")


def _is_directive_like(value: Any) -> bool:
    return isinstance(value, Mapping) and any(str(key).startswith("@") for key in value)


def _check_options(
    opts: Any,
    loc: str,
    problems: _Problems,
    *,
    required: tuple[str, ...] = (),
    optional: tuple[str, ...] = (),
) -> bool:
    """An options object: plain object, no unknown keys, required keys present. False: stop checking."""
    expected = required + optional
    if not isinstance(opts, Mapping) or _is_directive_like(opts):
        fields = ", ".join(_quoted(key) for key in expected)
        problems.append(f"{_at(loc)}: should be an object with {fields}, got {_describe(opts)}")
        return False
    for key in opts:
        if key not in expected:
            problems.append(f"{_at(loc)}: unknown key {_quoted(key)} (expected {', '.join(expected)})")
    for key in required:
        if key not in opts:
            problems.append(f"{_at(loc)}: needs {_quoted(key)}")
    return True


def _check_string(value: Any, loc: str, problems: _Problems, *, min_len: int = 0, max_len: int | None = None) -> None:
    if not isinstance(value, str):
        problems.append(f"{_at(loc)}: should be a string, got {_describe(value)}")
    elif len(value) < min_len:
        problems.append(f"{_at(loc)}: should be a string of length {min_len} or greater")
    elif max_len is not None and len(value) > max_len:
        problems.append(f"{_at(loc)}: should be a string of length {max_len} or less")


def _check_one_of(value: Any, loc: str, problems: _Problems, allowed: tuple[str, ...]) -> None:
    # Case-sensitive, because the resolver compares exactly (mapping-kit's validator lower-cases first,
    # so "Encode" passes there and then silently resolves to nothing).
    if value not in allowed:
        problems.append(f"{_at(loc)}: should be one of {', '.join(allowed)}, got {_quoted(value)}")


def _check_boolean(value: Any, loc: str, problems: _Problems) -> None:
    if not isinstance(value, bool):
        problems.append(f"{_at(loc)}: should be a boolean, got {_describe(value)}")


@_validator("@path")
def _check_path(value: Any, loc: str, problems: _Problems) -> None:
    _check_directive_or_string(value, loc, problems, is_path=True)


@_validator("@template")
def _check_template(value: Any, loc: str, problems: _Problems) -> None:
    _check_directive_or_string(value, loc, problems)


@_validator("@literal")
@_validator("@excludeWhenNull")
def _check_any(value: Any, loc: str, problems: _Problems) -> None:
    _check_value(value, loc, problems)


@_validator("@if")
def _check_if(opts: Any, loc: str, problems: _Problems) -> None:
    if not _check_options(opts, loc, problems, optional=("exists", "blank", "then", "else")):
        return
    for key in ("exists", "blank", "then", "else"):
        if key in opts:
            _check_value(opts[key], _join(loc, key), problems)
    if "exists" not in opts and "blank" not in opts:
        problems.append(f'{_at(loc)}: needs "exists" or "blank"')
    elif "exists" in opts and "blank" in opts:
        problems.append(f'{_at(loc)}: has both "exists" and "blank"; use one')
    elif not _js_truthy(opts.get("exists")) and not _js_truthy(opts.get("blank")):
        key = "exists" if "exists" in opts else "blank"
        problems.append(
            f"{_at(loc)}: {_quoted(key)} is {_quoted(opts[key])}, which counts as missing; "
            'use a directive or a value other than null, false, 0 and ""'
        )
    if "then" not in opts and "else" not in opts:
        problems.append(f'{_at(loc)}: needs "then" or "else"')


@_validator("@case")
def _check_case(opts: Any, loc: str, problems: _Problems) -> None:
    if not _check_options(opts, loc, problems, required=("operator",), optional=("value",)):
        return
    if "operator" in opts:
        _check_one_of(opts["operator"], _join(loc, "operator"), problems, ("lower", "upper"))
    if "value" in opts:
        _check_directive_or_string(opts["value"], _join(loc, "value"), problems)


@_validator("@replace")
def _check_replace(opts: Any, loc: str, problems: _Problems) -> None:
    if not _check_options(
        opts,
        loc,
        problems,
        required=("pattern", "value"),
        optional=("replacement", "pattern2", "replacement2", "ignorecase", "global"),
    ):
        return
    limits = {
        "pattern": (1, MAX_PATTERN_LENGTH),
        "replacement": (0, MAX_REPLACEMENT_LENGTH),
        "pattern2": (0, MAX_PATTERN_LENGTH),  # an empty pattern2 is allowed and ignored
        "replacement2": (0, MAX_REPLACEMENT_LENGTH),
    }
    for key, (min_len, max_len) in limits.items():
        if key in opts:
            _check_string(opts[key], _join(loc, key), problems, min_len=min_len, max_len=max_len)
    if "value" in opts:
        _check_directive_or_string(opts["value"], _join(loc, "value"), problems)
    for key in ("ignorecase", "global"):
        if key in opts:
            _check_boolean(opts[key], _join(loc, key), problems)


@_validator("@arrayPath")
def _check_array_path(data: Any, loc: str, problems: _Problems) -> None:
    if not _is_array(data):
        problems.append(f"{_at(loc)}: should be an array [path, item shape], got {_describe(data)}")
        return
    if not data:
        problems.append(f"{_at(loc)}: needs a path as its first element")
        return
    _check_directive_or_string(data[0], f"{loc}[0]", problems, is_path=True)
    if len(data) > 1:  # further elements are ignored, as in mapping-kit
        _check_value(data[1], f"{loc}[1]", problems)


@_validator("@json")
def _check_json(opts: Any, loc: str, problems: _Problems) -> None:
    if not _check_options(opts, loc, problems, required=("value", "mode")):
        return
    if "value" in opts:
        if not _js_truthy(opts["value"]):
            problems.append(
                f'{_at(_join(loc, "value"))}: should be a directive or a value other than null, false, 0 and ""'
            )
        else:
            _check_value(opts["value"], _join(loc, "value"), problems)
    if "mode" in opts:
        _check_one_of(opts["mode"], _join(loc, "mode"), problems, ("encode", "decode"))


@_validator("@flatten")
def _check_flatten(opts: Any, loc: str, problems: _Problems) -> None:
    if not _check_options(opts, loc, problems, required=("value", "separator"), optional=("omitArrays",)):
        return
    if "value" in opts:
        _check_value(opts["value"], _join(loc, "value"), problems)
    if "separator" in opts:
        _check_string(opts["separator"], _join(loc, "separator"), problems, min_len=1)
    if "omitArrays" in opts:
        _check_boolean(opts["omitArrays"], _join(loc, "omitArrays"), problems)


@_validator("@merge")
def _check_merge(opts: Any, loc: str, problems: _Problems) -> None:
    if not _check_options(opts, loc, problems, required=("objects", "direction")):
        return
    objects = opts.get("objects")
    if "objects" in opts and not _is_array(objects):
        problems.append(f"{_at(_join(loc, 'objects'))}: should be an array, got {_describe(objects)}")
    elif _is_array(objects):
        for index, item in enumerate(objects):
            item_loc = f"{_join(loc, 'objects')}[{index}]"
            if isinstance(item, Mapping):
                _check_value(item, item_loc, problems)
            else:
                problems.append(f"{item_loc}: should be an object or a mapping directive, got {_describe(item)}")
    if "direction" in opts:
        _check_one_of(opts["direction"], _join(loc, "direction"), problems, ("left", "right"))


@_validator("@transform")
def _check_transform(opts: Any, loc: str, problems: _Problems) -> None:
    if not _check_options(opts, loc, problems, required=("apply", "mapping")):
        return
    for key in ("apply", "mapping"):
        if key not in opts:
            continue
        value = opts[key]
        if not isinstance(value, Mapping) or _is_directive_like(value):
            problems.append(f"{_at(_join(loc, key))}: should be an object of fields, got {_describe(value)}")
        else:
            _check_value(value, _join(loc, key), problems)


def validate_mapping(mapping: Mapping[str, Any], *, where: str = "") -> None:
    """Check a field mapping (field name -> mapping value) once, when the config loads.

    Raises MappingError listing every problem; each names its place, prefixed by ``where``.
    """
    if not isinstance(mapping, Mapping):
        raise MappingError([f"{where or '(mapping)'}: should be an object of fields, got {_describe(mapping)}"])
    if value_depth_exceeds(mapping):
        raise MappingError([f"{where or '(mapping)'}: " + _too_deep("the mapping")])
    problems: _Problems = []
    for field, value in mapping.items():
        field = str(field)
        if field.startswith("@"):
            problems.append(
                f'{_join(where, field)}: a field name cannot start with "@"; a directive goes in the value of a field'
            )
            continue
        _check_value(value, _join(where, field), problems)
    if problems:
        raise MappingError(problems)
