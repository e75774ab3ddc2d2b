"""Paths (get.ts): ``$.a[0].b`` split into keys, looked up with JavaScript's rules; and the paths that
mapping-kit accepts but that can never mean what was written (checked when a mapping loads)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Final

from segment_qualtrics.segment.mapping_kit.js import UNDEFINED, is_array, js_truthy

# get.ts splits at every ".", at "[" followed by a quote or a digit, and at "]" run preceded by a quote
# or digit, then drops empty parts and every quote character. So "a.b[0]['c d']" -> a, b, 0, c d, while
# "[txt] non" stays one key.
_PATH_SPLIT: Final = re.compile(r"""\[(?=["'\d])|\.|(?<=["'\d])\]+""")


_QUOTES: Final = re.compile(r"""['"]""")


@lru_cache(maxsize=4096)
def compile_keys(path: str) -> tuple[str, ...]:
    """Split a get.ts path into keys; () is the whole object ("" and "." both mean the root)."""
    if path in ("", "."):
        return ()
    return tuple(_QUOTES.sub("", part) for part in _PATH_SPLIT.split(path) if part)


@lru_cache(maxsize=4096)
def compile_path(path: str) -> tuple[str, ...]:
    """Keys of an ``@path`` string, e.g. ``"$.a[0].b"`` -> ``("a", "0", "b")``; ``"$."`` -> ``()``."""
    # mapping-kit removes the first "$." wherever it is (String.replace), not only a leading one.
    return compile_keys(path.replace("$.", "", 1))


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
    if is_array(container) or isinstance(container, str):
        if key == "length":
            return len(container)
        index = _array_index(key, len(container))
        return UNDEFINED if index is None else container[index]
    return UNDEFINED  # numbers and booleans have no JSON members


def lookup(data: Any, keys: tuple[str, ...]) -> Any:
    for key in keys:
        # get.ts reduces with `prev && prev[key]`: a falsy value part-way (null, 0, "", false) is the
        # result itself, not undefined. Kept for parity, e.g. $.traits.email is null when traits is null.
        if not js_truthy(data):
            return data
        data = _member(data, key)
    return data


def path_problem(path: str) -> str | None:
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
