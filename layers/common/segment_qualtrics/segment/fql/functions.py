"""FQL functions: name -> (number of arguments, returns a condition, implementation)."""

import json
import re
from collections.abc import Callable
from typing import Any

from segment_qualtrics.segment.fql.glob import MAX_EVENT_GLOB, cached_glob
from segment_qualtrics.segment.fql.values import is_number, type_of


def _contains(text: Any, part: Any) -> bool:
    return isinstance(text, str) and isinstance(part, str) and part in text


def _match(text: Any, pattern: Any) -> bool:
    if not (isinstance(text, str) and isinstance(pattern, str)):
        return False
    glob = cached_glob(pattern) if len(pattern) <= MAX_EVENT_GLOB else None
    return glob is not None and glob.matches(text)


def _length(value: Any) -> Any:
    if value is None:
        return 0
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))  # bytes, as the docs say
    if isinstance(value, list | tuple):
        return len(value)
    return None


def _string_function(transform: Callable[[str], str]) -> Callable[[Any], Any]:
    def apply(value: Any) -> Any:
        return transform(value) if isinstance(value, str) else None

    return apply


def _titlecase(text: str) -> str:
    return " ".join(word[:1].upper() + word[1:] for word in text.split(" "))


_NUMERIC_TEXT = re.compile(r"\s*[-+]?(?:[0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?\s*")


def _number(value: Any) -> Any:
    if is_number(value):
        return value
    if isinstance(value, str) and _NUMERIC_TEXT.fullmatch(value):
        try:
            return float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            return float(value)
    return None


def _string(value: Any) -> Any:
    kind = type_of(value)
    if kind == "string":
        return value
    if kind == "number" and isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))  # 2.0 -> "2", as JSON writes it
    if kind in ("list", "object", "number", "bool", "null"):
        try:
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=repr)
        except Exception:
            return None
    return None


def _bool(value: Any) -> bool:
    kind = type_of(value)
    if kind == "bool":
        return value is True
    if kind == "number":
        number: float = value
        return number != 0
    if kind == "string":
        return value.strip().lower() in ("true", "1")
    if kind == "list":
        return len(value) > 0
    return False


FUNCTIONS: dict[str, tuple[int, bool, Callable[..., Any]]] = {
    "contains": (2, True, _contains),
    "match": (2, True, _match),
    "length": (1, False, _length),
    "lowercase": (1, False, _string_function(str.lower)),
    "uppercase": (1, False, _string_function(str.upper)),
    "snakecase": (1, False, _string_function(lambda s: s.replace(" ", "_"))),
    "kebabcase": (1, False, _string_function(lambda s: s.replace(" ", "-"))),
    "titlecase": (1, False, _string_function(_titlecase)),
    "typeof": (1, False, type_of),
    "bool": (1, True, _bool),
    "string": (1, False, _string),
    "number": (1, False, _number),
}
KNOWN_FUNCTIONS = ", ".join(sorted(FUNCTIONS))
