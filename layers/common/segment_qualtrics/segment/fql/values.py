"""FQL's types over JSON-like Python data: type names, equality, short renderings for explanations."""

import json
from collections.abc import Mapping
from typing import Any


class Missing:
    """Marks a path that is absent (explain only: evaluation reads absent as null)."""

    def __repr__(self) -> str:
        return "missing"


MISSING = Missing()


def type_of(value: Any) -> str:
    t = type(value)
    if t is str:
        return "string"
    if t is bool:
        return "bool"
    if t is int or t is float:
        return "number"
    if value is None or value is MISSING:
        return "null"
    if t is dict:
        return "object"
    if t is list or t is tuple:
        return "list"
    # Subclasses and other Mappings are rare; check them after the exact types above.
    if isinstance(value, str):
        return "string"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "list"
    return "unknown"


def is_number(value: Any) -> bool:
    t = type(value)
    return t is int or t is float or (t is not bool and isinstance(value, int | float))


def same_value(left: Any, right: Any) -> bool:
    """FQL ``=``: same type and equal; lists and objects deeply."""
    kind = type_of(left)
    if kind != type_of(right) or kind == "unknown":
        return False
    if kind == "list":
        return len(left) == len(right) and all(same_value(a, b) for a, b in zip(left, right, strict=True))
    if kind == "object":
        return left.keys() == right.keys() and all(same_value(left[k], right[k]) for k in left)
    if kind == "null":
        return True
    same: bool = left == right
    return same


def render(value: Any) -> str:
    """A short JSON-looking rendering for explanations (quotes show a string is a string)."""
    if value is MISSING:
        return "missing"
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except Exception:
        text = object.__repr__(value)
    return text if len(text) <= 80 else text[:77] + "..."
