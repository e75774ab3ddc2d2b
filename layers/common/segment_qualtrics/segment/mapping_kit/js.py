"""JavaScript semantics that mapping-kit results depend on: undefined, truthiness, String(), JSON.stringify."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final


class Undefined:
    """Type of ``UNDEFINED``: falsy, a singleton that survives copy and pickle."""

    _instance: Undefined | None = None

    def __new__(cls) -> Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "UNDEFINED"


UNDEFINED: Final = Undefined()


def is_array(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def js_truthy(value: Any) -> bool:
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


def js_type(value: Any) -> str:
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
    if is_array(value):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def js_number(value: int | float) -> str:
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


def js_string(value: Any) -> str:
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
        return js_number(value)
    if is_array(value):
        # Array.prototype.join: null and undefined items become "".
        return ",".join("" if item is None or item is UNDEFINED else js_string(item) for item in value)
    return "[object Object]"


def js_json(value: Any) -> Any:
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
        return js_number(value) if math.isfinite(value) else "null"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if is_array(value):
        items = (js_json(item) for item in value)
        return "[" + ",".join("null" if item is UNDEFINED else item for item in items) + "]"
    if isinstance(value, Mapping):
        members = ((key, js_json(item)) for key, item in value.items())
        return (
            "{"
            + ",".join(
                f"{json.dumps(str(key), ensure_ascii=False)}:{text}" for key, text in members if text is not UNDEFINED
            )
            + "}"
        )
    return UNDEFINED  # functions and the like: JSON.stringify leaves them out


def reject_constant(name: str) -> Any:
    raise ValueError(f"unexpected token {name}")  # JSON.parse has no NaN / Infinity


def js_loosely_equals_empty_string(value: Any) -> bool:
    """``value == ''`` with JavaScript's loose equality (what ``@if`` ``blank`` tests)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value == 0
    if isinstance(value, str):
        return value == ""
    if is_array(value):
        # Compared through Array.prototype.toString(): [] and [null] and [""] are "".
        return js_string(value) == ""
    return False


def remove_undefined(value: Any) -> Any:
    """remove-undefined.ts, then JSON.stringify's rule for arrays (undefined items become null).

    It also copies every object and array, so the result never shares structure with the event.
    """
    if isinstance(value, Mapping):
        return {key: remove_undefined(item) for key, item in value.items() if item is not UNDEFINED}
    if is_array(value):
        return [None if item is UNDEFINED else remove_undefined(item) for item in value]
    return value
