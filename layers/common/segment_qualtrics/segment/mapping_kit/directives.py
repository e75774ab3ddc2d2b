"""mapping-kit's directives, each as its resolver (index.ts) next to its validator (validate.ts), registered
together. A validator reports, when the config loads, what its resolver would otherwise meet per event."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from segment_qualtrics.segment.mapping_kit.engine import (
    Problems,
    check_boolean,
    check_directive_or_string,
    check_one_of,
    check_options,
    check_string,
    check_value,
    describe,
    is_directive_like,
    join_loc,
    options,
    place,
    quoted,
    register,
    resolve,
    resolve_string,
)
from segment_qualtrics.segment.mapping_kit.js import (
    UNDEFINED,
    is_array,
    js_json,
    js_loosely_equals_empty_string,
    js_string,
    js_truthy,
    js_type,
    reject_constant,
    remove_undefined,
)
from segment_qualtrics.segment.mapping_kit.limits import (
    MAX_MERGED_STRING_CHARS,
    MAX_PATTERN_LENGTH,
    MAX_REPLACEMENT_LENGTH,
    MAX_TEXT_CHARS,
    DirectiveError,
    too_deep,
    too_long,
    value_depth_exceeds,
)
from segment_qualtrics.segment.mapping_kit.paths import compile_keys, compile_path, lookup

# --- @path -----------------------------------------------------------------------------------------------

def _path(value: Any, payload: Any) -> Any:
    return lookup(payload, compile_path(resolve_string("@path", value, payload)))


def _check_path(value: Any, loc: str, problems: Problems) -> None:
    check_directive_or_string(value, loc, problems, is_path=True)


register("@path", _path, _check_path)


# --- @literal --------------------------------------------------------------------------------------------

def _literal(value: Any, payload: Any) -> Any:
    return resolve(value, payload)


def _check_any(value: Any, loc: str, problems: Problems) -> None:
    check_value(value, loc, problems)


register("@literal", _literal, _check_any)


# --- @if -------------------------------------------------------------------------------------------------

def _if(opts: Any, payload: Any) -> Any:
    opts = options("@if", opts, 'an object with an "exists" key')
    # The presence test is on the raw values, so "exists": false/null/0/"" counts as missing.
    if not js_truthy(opts.get("exists")) and not js_truthy(opts.get("blank")):
        raise DirectiveError('@if requires an "exists" key or a "blank" key')
    if "exists" in opts:
        value = resolve(opts["exists"], payload)
        condition = value is not UNDEFINED and value is not None
    else:
        value = resolve(opts["blank"], payload)
        condition = value is not UNDEFINED and value is not None and not js_loosely_equals_empty_string(value)
    if condition and "then" in opts:
        return resolve(opts["then"], payload)
    # mapping-kit tests `opts.else` for truthiness: "else": false/0/""/null leaves the field out.
    # {"@literal": false} is the way to get a falsy else value.
    if not condition and js_truthy(opts.get("else")):
        return resolve(opts["else"], payload)
    return UNDEFINED


def _check_if(opts: Any, loc: str, problems: Problems) -> None:
    if not check_options(opts, loc, problems, optional=("exists", "blank", "then", "else")):
        return
    for key in ("exists", "blank", "then", "else"):
        if key in opts:
            check_value(opts[key], join_loc(loc, key), problems)
    if "exists" not in opts and "blank" not in opts:
        problems.append(f'{place(loc)}: needs "exists" or "blank"')
    elif "exists" in opts and "blank" in opts:
        problems.append(f'{place(loc)}: has both "exists" and "blank"; use one')
    elif not js_truthy(opts.get("exists")) and not js_truthy(opts.get("blank")):
        key = "exists" if "exists" in opts else "blank"
        problems.append(
            f"{place(loc)}: {quoted(key)} is {quoted(opts[key])}, which counts as missing; "
            'use a directive or a value other than null, false, 0 and ""'
        )
    if "then" not in opts and "else" not in opts:
        problems.append(f'{place(loc)}: needs "then" or "else"')


register("@if", _if, _check_if)


# --- @case -----------------------------------------------------------------------------------------------

def _case(opts: Any, payload: Any) -> Any:
    opts = options("@case", opts, 'an object with a "operator" key')
    operator = opts.get("operator")
    if not js_truthy(operator):
        raise DirectiveError('@case requires a "operator" key')
    if not js_truthy(opts.get("value")):
        return UNDEFINED
    value = resolve(opts["value"], payload)
    if not isinstance(value, str):
        return value  # non-strings pass through unchanged
    if operator == "lower":
        return value.lower()
    if operator == "upper":
        return value.upper()
    raise DirectiveError('operator key should have a value of "lower" or "upper"')


def _check_case(opts: Any, loc: str, problems: Problems) -> None:
    if not check_options(opts, loc, problems, required=("operator",), optional=("value",)):
        return
    if "operator" in opts:
        check_one_of(opts["operator"], join_loc(loc, "operator"), problems, ("lower", "upper"))
    if "value" in opts:
        check_directive_or_string(opts["value"], join_loc(loc, "value"), problems)


register("@case", _case, _check_case)


# --- @replace --------------------------------------------------------------------------------------------

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
        raise DirectiveError(f'@replace requires a "pattern" less than {MAX_PATTERN_LENGTH} characters')
    if len(replacement) > MAX_REPLACEMENT_LENGTH:
        raise DirectiveError(f'@replace requires a "replacement" less than {MAX_REPLACEMENT_LENGTH} characters')
    # mapping-kit escapes the pattern: it is always matched literally, never as a regular expression.
    regex = re.compile(re.escape(pattern), re.IGNORECASE if ignorecase else 0)
    expand = _js_replacement(replacement)
    length = len(value)

    def capped(match: re.Match[str]) -> str:
        nonlocal length
        text = expand(match)
        length += len(text) - (match.end() - match.start())
        if length > MAX_TEXT_CHARS:   # stops at once: "$`$'" on a long value is quadratic otherwise
            raise DirectiveError("@replace: " + too_long("the result"))
        return text

    return regex.sub(capped, value, count=0 if is_global else 1)


def _replace(opts: Any, payload: Any) -> Any:
    opts = options("@replace", opts, 'an object with a "pattern" key')
    pattern = opts.get("pattern")
    if not js_truthy(pattern):
        raise DirectiveError('@replace requires a "pattern" key')
    # Defaults: null/missing replacement is "", matching is case sensitive and global.
    replacement = "" if opts.get("replacement") is None else opts["replacement"]
    pattern2 = opts.get("pattern2")
    replacement2 = "" if opts.get("replacement2") is None else opts["replacement2"]
    ignorecase = False if opts.get("ignorecase") is None else opts["ignorecase"]
    is_global = True if opts.get("global") is None else opts["global"]
    if not js_truthy(opts.get("value")):
        return UNDEFINED
    value = resolve(opts["value"], payload)
    if isinstance(value, (bool, int, float)):
        value = js_string(value)  # booleans and numbers are replaced in their string form
    if not (
        isinstance(value, str)
        and isinstance(pattern, str)
        and isinstance(replacement, str)
        and isinstance(ignorecase, bool)
        and isinstance(is_global, bool)
    ):
        return ""  # e.g. a missing or null value: mapping-kit answers "", not undefined
    result = _perform_replace(value, pattern, replacement, is_global=is_global, ignorecase=ignorecase)
    if js_truthy(pattern2) and isinstance(pattern2, str) and isinstance(replacement2, str):
        result = _perform_replace(result, pattern2, replacement2, is_global=is_global, ignorecase=ignorecase)
    return result


def _check_replace(opts: Any, loc: str, problems: Problems) -> None:
    if not check_options(
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
            check_string(opts[key], join_loc(loc, key), problems, min_len=min_len, max_len=max_len)
    if "value" in opts:
        check_directive_or_string(opts["value"], join_loc(loc, "value"), problems)
    for key in ("ignorecase", "global"):
        if key in opts:
            check_boolean(opts[key], join_loc(loc, key), problems)


register("@replace", _replace, _check_replace)


# --- @arrayPath ------------------------------------------------------------------------------------------

def _array_path(data: Any, payload: Any) -> Any:
    if not is_array(data):
        raise DirectiveError(f"@arrayPath expected array, got {js_type(data)}")
    path = data[0] if len(data) > 0 else UNDEFINED
    item_shape = data[1] if len(data) > 1 else UNDEFINED
    root = lookup(payload, compile_path(path)) if isinstance(path, str) else resolve(path, payload)
    # With a non-empty shape, each item (a lone object counts as a one-item array) is resolved
    # against that shape, the item being the payload of the shape's directives.
    if (isinstance(root, Mapping) or is_array(root)) and isinstance(item_shape, Mapping) and item_shape:
        items = root if is_array(root) else [root]
        return [resolve(item_shape, item) for item in items]
    return root


def _check_array_path(data: Any, loc: str, problems: Problems) -> None:
    if not is_array(data):
        problems.append(f"{place(loc)}: should be an array [path, item shape], got {describe(data)}")
        return
    if not data:
        problems.append(f"{place(loc)}: needs a path as its first element")
        return
    check_directive_or_string(data[0], f"{loc}[0]", problems, is_path=True)
    if len(data) > 1:  # further elements are ignored, as in mapping-kit
        check_value(data[1], f"{loc}[1]", problems)


register("@arrayPath", _array_path, _check_array_path)


# --- @template -------------------------------------------------------------------------------------------

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
        value = lookup(payload, compile_keys((match.group(1) or match.group(2)).strip()))
        text = "" if value is None or value is UNDEFINED else js_string(value)
        length += len(text) - (match.end() - match.start())
        if length > MAX_TEXT_CHARS:
            raise DirectiveError("@template: " + too_long("the rendered text"))
        return text

    return _PLACEHOLDER.sub(replace, template)


def _template(value: Any, payload: Any) -> Any:
    return _render(resolve_string("@template", value, payload), payload)


def _check_template(value: Any, loc: str, problems: Problems) -> None:
    check_directive_or_string(value, loc, problems)


register("@template", _template, _check_template)


# --- @flatten --------------------------------------------------------------------------------------------

def _flatten(value: Any, prefix: str, separator: str, omit_arrays: bool, budget: list[int]) -> dict[str, Any]:
    """flatten.ts: nested keys joined by separator; a scalar at the top becomes {"": value}.

    ``budget`` holds the characters the keys may still take: each key repeats its parents' keys, so a long
    key over many members would make far more text than the event holds.
    """
    if isinstance(value, Mapping) or (not omit_arrays and is_array(value)):
        entries = value.items() if isinstance(value, Mapping) else ((str(i), v) for i, v in enumerate(value))
        flat: dict[str, Any] = {}
        for key, item in entries:
            key = f"{prefix}{separator}{key}" if prefix else key
            budget[0] -= len(key)
            if budget[0] < 0:
                raise DirectiveError("@flatten: " + too_long("the keys"))
            flat.update(_flatten(item, key, separator, omit_arrays, budget))
        return flat
    return {prefix: value}


def _flatten_directive(opts: Any, payload: Any) -> Any:
    opts = options("@flatten", opts, 'an object with a "separator" key')
    if not js_truthy(opts.get("separator")):
        raise DirectiveError('@flatten requires a "separator" key')
    separator = resolve(opts["separator"], payload)
    if not isinstance(separator, str):
        raise DirectiveError("@flatten requires a string separator")
    value = resolve(opts.get("value", UNDEFINED), payload)
    return _flatten(value, "", separator, js_truthy(opts.get("omitArrays")), [MAX_TEXT_CHARS])


def _check_flatten(opts: Any, loc: str, problems: Problems) -> None:
    if not check_options(opts, loc, problems, required=("value", "separator"), optional=("omitArrays",)):
        return
    if "value" in opts:
        check_value(opts["value"], join_loc(loc, "value"), problems)
    if "separator" in opts:
        check_string(opts["separator"], join_loc(loc, "separator"), problems, min_len=1)
    if "omitArrays" in opts:
        check_boolean(opts["omitArrays"], join_loc(loc, "omitArrays"), problems)


register("@flatten", _flatten_directive, _check_flatten)


# --- @json -----------------------------------------------------------------------------------------------

def _json(opts: Any, payload: Any) -> Any:
    opts = options("@json", opts, 'an object with a "value" key')
    if not js_truthy(opts.get("mode")):
        raise DirectiveError('@json requires a "mode" key')
    if not js_truthy(opts.get("value")):
        raise DirectiveError('@json requires a "value" key')
    value = resolve(opts["value"], payload)
    if opts["mode"] == "encode":
        return js_json(value)
    if opts["mode"] == "decode":
        if not isinstance(value, str):
            return value
        try:
            decoded = json.loads(value, parse_constant=reject_constant)
        except ValueError as error:
            raise DirectiveError(f"@json: cannot decode value: {error}") from None
        except RecursionError:
            raise DirectiveError("@json: " + too_deep("the decoded value")) from None
        if value_depth_exceeds(decoded):
            raise DirectiveError("@json: " + too_deep("the decoded value"))
        return decoded
    return UNDEFINED


def _check_json(opts: Any, loc: str, problems: Problems) -> None:
    if not check_options(opts, loc, problems, required=("value", "mode")):
        return
    if "value" in opts:
        if not js_truthy(opts["value"]):
            problems.append(
                f'{place(join_loc(loc, "value"))}: should be a directive or a value other than null, false, 0 and ""'
            )
        else:
            check_value(opts["value"], join_loc(loc, "value"), problems)
    if "mode" in opts:
        check_one_of(opts["mode"], join_loc(loc, "mode"), problems, ("encode", "decode"))


register("@json", _json, _check_json)


# --- @merge ----------------------------------------------------------------------------------------------

def _assign(target: dict[str, Any], source: Any) -> None:
    """Object.assign(target, source) for JSON values."""
    if isinstance(source, Mapping):
        target.update(source)
    elif isinstance(source, str) and len(source) > MAX_MERGED_STRING_CHARS:
        # One member per character: a long string would be hundreds of bytes of memory per character.
        raise DirectiveError(f"@merge: a string of more than {MAX_MERGED_STRING_CHARS} characters to merge")
    elif is_array(source) or isinstance(source, str):
        target.update((str(i), item) for i, item in enumerate(source))


def _merge(opts: Any, payload: Any) -> Any:
    opts = options("@merge", opts, 'an object with an "objects" key and a "direction" key')
    if not js_truthy(opts.get("direction")):
        raise DirectiveError('@merge requires a "direction" key')
    direction = resolve(opts["direction"], payload)
    if not js_truthy(opts.get("objects")):
        raise DirectiveError('@merge requires a "objects" key')
    if not is_array(opts["objects"]):
        raise DirectiveError(f"@merge: expected opts.array, got {js_type(opts['objects'])}")
    objects = [resolve(item, payload) for item in opts["objects"]]
    if direction == "left":
        objects.reverse()  # left: the first object wins; right (default): the last one wins
    merged: dict[str, Any] = {}
    for item in objects:
        _assign(merged, item)
    return merged


def _check_merge(opts: Any, loc: str, problems: Problems) -> None:
    if not check_options(opts, loc, problems, required=("objects", "direction")):
        return
    objects = opts.get("objects")
    if "objects" in opts and not is_array(objects):
        problems.append(f"{place(join_loc(loc, 'objects'))}: should be an array, got {describe(objects)}")
    elif is_array(objects):
        for index, item in enumerate(objects):
            item_loc = f"{join_loc(loc, 'objects')}[{index}]"
            if isinstance(item, Mapping):
                check_value(item, item_loc, problems)
            else:
                problems.append(f"{item_loc}: should be an object or a mapping directive, got {describe(item)}")
    if "direction" in opts:
        check_one_of(opts["direction"], join_loc(loc, "direction"), problems, ("left", "right"))


register("@merge", _merge, _check_merge)


# --- @transform ------------------------------------------------------------------------------------------

def _transform(opts: Any, payload: Any) -> Any:
    opts = options("@transform", opts, 'an object with an "apply" key and a "mapping" key')
    if not js_truthy(opts.get("mapping")):
        raise DirectiveError('@transform requires a "mapping" key')
    if not js_truthy(opts.get("apply")):
        raise DirectiveError('@transform requires a "apply" key')
    if not isinstance(opts["apply"], Mapping):
        raise DirectiveError('@transform "apply" key should be an object')
    if not isinstance(payload, Mapping):
        raise DirectiveError(f"data must be an object, got {js_type(payload)}")
    # "apply" builds a new payload (only its own keys) that "mapping" is then resolved against.
    new_payload = remove_undefined(resolve(opts["apply"], payload))
    return resolve(opts["mapping"], new_payload)


def _check_transform(opts: Any, loc: str, problems: Problems) -> None:
    if not check_options(opts, loc, problems, required=("apply", "mapping")):
        return
    for key in ("apply", "mapping"):
        if key not in opts:
            continue
        value = opts[key]
        if not isinstance(value, Mapping) or is_directive_like(value):
            problems.append(f"{place(join_loc(loc, key))}: should be an object of fields, got {describe(value)}")
        else:
            check_value(value, join_loc(loc, key), problems)


register("@transform", _transform, _check_transform)


# --- @excludeWhenNull ------------------------------------------------------------------------------------

def _drop_nulls(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _drop_nulls(item) for key, item in value.items() if item is not None}
    if is_array(value):
        return [_drop_nulls(item) for item in value]
    return value


def _exclude_when_null(value: Any, payload: Any) -> Any:
    resolved = resolve(value, payload)
    if resolved is None:
        return UNDEFINED
    # The current schema fixtures also drop null members at any depth of a resolved object.
    return _drop_nulls(resolved)


register("@excludeWhenNull", _exclude_when_null, _check_any)
