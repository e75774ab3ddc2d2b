"""FQL nodes. ``fn(event)`` evaluates; condition nodes (is_condition) always return a Python bool.

Each node carries a closure built once at parse time, so evaluating an event never walks the tree;
``explain`` walks it to say in words why an event matched or not.
"""

import operator
from collections.abc import Callable, Mapping
from typing import Any

from segment_qualtrics.segment.fql.functions import FUNCTIONS
from segment_qualtrics.segment.fql.values import MISSING, is_number, render, same_value, type_of

Fn = Callable[[Any], Any]


class Node:
    __slots__ = ("start", "end", "fn")
    is_condition = False

    def __init__(self, start: int, end: int, fn: Fn) -> None:
        self.start = start
        self.end = end
        self.fn = fn

    def children(self) -> tuple["Node", ...]:
        return ()

    def text(self, source: str) -> str:
        return source[self.start : self.end]

    def facts(self, event: Any, source: str, out: list[str]) -> None:
        """Describe the event data this node looks at (``x is "abc"``), for explanations."""
        for child in self.children():
            child.facts(event, source, out)

    def explain(self, event: Any, source: str) -> str:
        result = "true" if self.fn(event) else "false"
        facts: list[str] = []
        for child in self.children():
            child.facts(event, source, facts)
        facts = list(dict.fromkeys(facts))  # once each, in order
        verdict = f"{self.text(source)} is {result}"
        return f"{verdict}: {', '.join(facts)}" if facts else verdict


class Literal(Node):
    __slots__ = ("value",)

    def __init__(self, start: int, end: int, value: Any) -> None:
        super().__init__(start, end, lambda event: value)
        self.value = value


class Path(Node):
    __slots__ = ("keys", "steps", "top_key")

    def __init__(self, start: int, end: int, keys: tuple[str, ...]) -> None:
        # Each step keeps the key for objects and, when it is all digits, the index for lists.
        self.keys = keys
        self.steps = tuple((key, _list_index(key)) for key in keys)
        # The one top-level key this path reads, when it is no list index: ``name = "text"`` reads it directly.
        self.top_key: str | None = keys[0] if len(self.steps) == 1 and self.steps[0][1] is None else None
        super().__init__(start, end, self._compile())

    def _compile(self) -> Fn:
        if self.top_key is not None:
            key = self.top_key

            def get_top(event: Any) -> Any:
                # The event is a Mapping, so .get is the fast road; absent reads as null.
                try:
                    return event.get(key)
                except AttributeError:
                    return None

            return get_top
        steps = self.steps

        def get(event: Any) -> Any:
            value = event
            for key, index in steps:
                if type(value) is dict:
                    value = value.get(key)
                elif isinstance(value, list | tuple):
                    value = value[index] if index is not None and index < len(value) else None
                elif isinstance(value, Mapping):
                    value = value.get(key)
                else:
                    return None
                if value is None:
                    return None
            return value

        if len(steps) == 2:
            (first, _), (second, _) = steps

            def get_two(event: Any) -> Any:
                # ``properties.total`` in dicts (nearly always so): two reads, no loop; else the loop.
                if type(event) is dict:
                    value = event.get(first)
                    if type(value) is dict:
                        return value.get(second)
                return get(event)

            return get_two
        return get

    def lookup(self, event: Any) -> Any:
        """Like fn, but tells a missing path (MISSING) from an explicit null."""
        value = event
        for key, index in self.steps:
            if isinstance(value, list | tuple):
                value = value[index] if index is not None and index < len(value) else MISSING
            elif isinstance(value, Mapping):
                value = value.get(key, MISSING)
            else:
                return MISSING
            if value is MISSING:
                return MISSING
        return value

    def facts(self, event: Any, source: str, out: list[str]) -> None:
        out.append(f"{self.text(source)} is {render(self.lookup(event))}")


def _list_index(key: str) -> int | None:
    # Only short all-digit names can index a list (and int() refuses very long digit strings).
    return int(key) if key.isascii() and key.isdecimal() and len(key) < 19 else None


class List(Node):
    __slots__ = ("values",)

    def __init__(self, start: int, end: int, values: list[Any]) -> None:
        self.values = values
        super().__init__(start, end, lambda event: values)


class Call(Node):
    __slots__ = ("name", "args")

    def __init__(self, start: int, end: int, name: str, args: list[Node], fn: Fn) -> None:
        super().__init__(start, end, fn)
        self.name = name
        self.args = tuple(args)

    @property
    def is_condition(self) -> bool:  # type: ignore[override]
        return FUNCTIONS[self.name][1]

    def children(self) -> tuple[Node, ...]:
        return self.args

    def facts(self, event: Any, source: str, out: list[str]) -> None:
        super().facts(event, source, out)
        if not self.is_condition:
            out.append(f"{self.text(source)} is {render(self.fn(event))}")


class Comparison(Node):
    __slots__ = ("op", "left", "right")
    is_condition = True

    def __init__(self, op: str, left: Node, right: Node) -> None:
        self.op, self.left, self.right = op, left, right
        super().__init__(left.start, right.end, compare(op, left, right))

    def children(self) -> tuple[Node, ...]:
        return (self.left, self.right)


class Truthy(Node):
    """A lone value used as a condition: true only when it is the boolean true."""

    __slots__ = ("operand",)
    is_condition = True

    def __init__(self, operand: Node) -> None:
        self.operand = operand
        get = operand.fn

        def is_true(event: Any) -> bool:
            return get(event) is True

        super().__init__(operand.start, operand.end, is_true)

    def children(self) -> tuple[Node, ...]:
        return (self.operand,)


class Not(Node):
    __slots__ = ("operand",)
    is_condition = True

    def __init__(self, start: int, operand: Node) -> None:
        self.operand = operand = as_condition(operand)
        test = operand.fn

        def negate(event: Any) -> bool:
            return not test(event)

        super().__init__(start, operand.end, negate)

    def children(self) -> tuple[Node, ...]:
        return (self.operand,)

    def explain(self, event: Any, source: str) -> str:
        result = "true" if self.fn(event) else "false"
        return f"{self.text(source)} is {result} because {self.operand.explain(event, source)}"


class Junction(Node):
    """``and`` / ``or`` over two or more conditions."""

    __slots__ = ("word", "operands")
    is_condition = True

    def __init__(self, word: str, operands: list[Node]) -> None:
        self.word = word
        self.operands = tuple(as_condition(o) for o in operands)
        super().__init__(self.operands[0].start, self.operands[-1].end, self._compile())

    def _compile(self) -> Fn:
        tests = [o.fn for o in self.operands]
        return all_of(tests) if self.word == "and" else any_of(tests)

    def children(self) -> tuple[Node, ...]:
        return self.operands

    def explain(self, event: Any, source: str) -> str:
        # Name the operand that decided: the first false one of an ``and``, the first true one of an
        # ``or``; when every operand counted, name them all.
        deciding = self.word == "or"
        for operand in self.operands:
            if operand.fn(event) is deciding:
                return operand.explain(event, source)
        return "; ".join(operand.explain(event, source) for operand in self.operands)


def all_of(tests: list[Fn]) -> Fn:
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:  # the common case, without a loop
        first, second = tests
        return lambda event: first(event) and second(event)
    chain = tuple(tests)

    def all_true(event: Any) -> bool:   # a plain loop: about twice as fast as all() over a generator
        for test in chain:
            if not test(event):
                return False
        return True

    return all_true


def any_of(tests: list[Fn]) -> Fn:
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        first, second = tests
        return lambda event: first(event) or second(event)
    chain = tuple(tests)

    def any_true(event: Any) -> bool:
        for test in chain:
            if test(event):
                return True
        return False

    return any_true


def as_condition(node: Node) -> Node:
    return node if node.is_condition else Truthy(node)


# ---------------------------------------------------------------------------------------------------------
# Comparisons

_ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_MIRROR = {"=": "=", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


def compare(op: str, left: Node, right: Node) -> Fn:
    if op == "in":
        return _compare_in(left, right)
    if isinstance(left, Literal) and not isinstance(right, Literal):
        left, right, op = right, left, _MIRROR[op]  # put the literal on the right for the fast roads
    if op in ("=", "!="):
        top_key = left.top_key if isinstance(left, Path) else None
        equal = _equal_to_literal(left.fn, right.value, top_key) if isinstance(right, Literal) else None
        if equal is None:
            get_left, get_right = left.fn, right.fn

            def equal(event: Any) -> bool:
                return same_value(get_left(event), get_right(event))

        if op == "=":
            return equal
        return lambda event: not equal(event)
    order = _ORDER[op]
    get = left.fn
    if isinstance(right, Literal):
        bound = right.value
        if not is_number(bound):
            return lambda event: False  # only numbers are ordered

        def ordered_literal(event: Any) -> bool:
            value = get(event)
            kind = type(value)  # is_number inlined: this runs for every event
            if kind is int or kind is float or (kind is not bool and isinstance(value, int | float)):
                ordered: bool = order(value, bound)
                return ordered
            return False

        return ordered_literal
    get_right = right.fn

    def ordered(event: Any) -> bool:
        a, b = get(event), get_right(event)
        return is_number(a) and is_number(b) and order(a, b)

    return ordered


def _equal_to_literal(get: Fn, literal: Any, key: str | None) -> Fn | None:
    """Specialised ``path = literal`` tests: same answers as same_value, fewer steps.

    ``key``: the top-level key ``get`` reads, if it reads one (a Path's ``top_key``).
    """
    if literal is None:
        return lambda event: get(event) is None
    if literal is True or literal is False:
        return lambda event: get(event) is literal
    if type(literal) is str:
        # == between a str and any other JSON type is already False.
        if key is not None:
            # ``name = "text"`` on a top-level key: a dict event is read here, one call fewer.
            def equal_top(event: Any) -> bool:
                same: bool = event.get(key) == literal if type(event) is dict else get(event) == literal
                return same

            return equal_top
        return lambda event: get(event) == literal
    if is_number(literal):
        return lambda event: is_number(value := get(event)) and value == literal
    return None


def _compare_in(left: Node, right: Node) -> Fn:
    get = left.fn
    if isinstance(right, List) and right.values and all(type(v) is str for v in right.values):
        choices = frozenset(right.values)  # ``type in ["track", "identify"]``: one set lookup
        return lambda event: isinstance(value := get(event), str) and value in choices
    get_list = right.fn

    def contained(event: Any) -> bool:
        value, items = get(event), get_list(event)
        if type_of(value) not in ("string", "number", "bool", "null") or type_of(items) != "list":
            return False
        return any(same_value(value, item) for item in items)

    return contained
