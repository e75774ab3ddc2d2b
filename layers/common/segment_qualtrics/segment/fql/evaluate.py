"""Subscription triggers: Segment's Destination Filter Query Language (FQL).

A subscription's ``trigger`` (Segment calls it ``subscribe``) decides which events reach an action.
``compile_trigger`` parses it once (tokenizer + recursive descent) into a tree of small nodes. Each node
carries a closure, so ``Trigger.matches`` evaluates an event without re-parsing; ``Trigger.explain`` walks
the same tree to say in words why an event matched or not (dry-run preview). Standard library only.

Grammar, lowest precedence first::

    trigger    = or_expr END
    or_expr    = and_expr { "or" and_expr }
    and_expr   = not_expr { ( "and" | "," ) not_expr }
    not_expr   = "!" not_expr | comparison
    comparison = operand [ ( "=" | "!=" | "<" | "<=" | ">" | ">=" | "in" ) operand ]
    operand    = STRING | NUMBER | "true" | "false" | "null" | list | "(" or_expr ")"
               | FUNCTION "(" or_expr { "," or_expr } ")" | path
    list       = "[" [ literal { "," literal } ] "]"
    path       = name { "." name | "[" DIGITS "]" }

Sources: Segment's FQL reference (segment-docs ``src/api/public-api/fql.md``), the ``segmentio/fql-ts``
lexer, and ``@segment/destination-subscriptions`` (``parse-fql.ts``, ``validate.ts``), which evaluates the
subscriptions of action destinations such as Qualtrics. Where they are silent or disagree, we chose:

- Comma. Segment's Qualtrics code writes a default trigger as ``type = "track", event = "Transaction
  Created"``. The FQL docs never mention a comma, but Segment's subscription parser skips the comma token
  and keeps its default group operator, ``and``. So a comma between conditions means ``and`` (same
  precedence). Inside function calls and lists it still separates arguments and items.
- Precedence (the docs do not state it): ``or`` < ``and``/``,`` < ``!`` < comparison. ``!`` negates a
  whole comparison, like SQL's NOT: ``!type = "track"`` means ``!(type = "track")``. A C-style reading
  (``(!type) = "track"``) could never be true, so it would only ever hide a mistake.
- Strings take double or single quotes (the docs use single, Segment's code double). Escapes: ``\\"``
  ``\\'`` ``\\\\`` ``\\n`` ``\\r`` ``\\t`` ``\\uXXXX``. Any other backslash pair is kept as written, so
  glob escapes such as ``match(event, "a\\*")`` reach the glob matcher.
- Types follow the docs strictly. ``=`` is true when both sides have the same type and are equal
  (``1 = 1.0``; lists and objects compare deeply); ``!=`` is its exact negation. ``<`` ``<=`` ``>``
  ``>=`` compare numbers only (booleans are not numbers); any other pair is false, never an error. A
  numeric string is not a number: ``properties.total > 10`` is false for ``"19.99"`` (Segment's
  ``validate.ts`` coerces with ``String()``/``Number()``; FQL's docs do not). ``number(...)`` converts.
- A missing path reads as ``null``: ``x = null`` is true when x is missing or null, ``x != null`` when it
  exists and is not null.
- A value standing alone as a condition (``properties.enabled or ...``, a docs example) is true only when
  it is the boolean ``true``. ``and``/``or``/``!`` treat everything else as false.
- Paths: names use ``a-z A-Z 0-9 _ -``; any other character is escaped with a backslash, as the docs say
  (``properties.product\\ 1.price``, ``properties.a\\.b``). ``and or in null true false`` are keywords at
  the start of a path (write ``\\null`` for a top-level key of that name); after a dot every name is a key.
  ``.0`` and ``[0]`` index lists (lodash style, as Segment's ``get.ts``); on an object they read key "0".
  Paths address the event as written. (Segment's runtime reads ``properties.*`` from ``traits`` on identify
  and group events; we do not copy that quirk.)
- Keywords are lowercase. ``in`` is true when a string/number/bool/null left side equals an item of the
  list on the right.
- Functions, with the docs' null handling (``contains(null, s)`` false, ``length(null)`` 0,
  ``lowercase(null)`` null, ``typeof(null)`` "null", ``match(null, p)`` false): contains, match, length,
  lowercase, uppercase, snakecase, kebabcase, titlecase, typeof, bool, string, number. ``length`` of a
  string counts UTF-8 bytes, as documented. ``typeof`` returns the docs' names "string", "number",
  "bool", "null", "list", plus "object" for maps (the docs name none) and "unknown" for non-JSON values.
  ``match(s, pattern)`` is a full, case-sensitive glob: ``*`` ``?`` ``[abc]`` ``[a-z]`` ``[^abc]``
  ``\\x``. A malformed literal pattern is a syntax error; a malformed pattern read from the event, or one
  longer than 256 characters, makes ``match`` false. Matching never backtracks: its time is at most the
  text's length times the pattern's, whatever the number of stars. (One docs example swaps the
  arguments; we follow the documented signature.)
- Error positions are 0-based indexes into the source; "end of input" is at ``len(source)``.
  Nesting (parentheses, ``!``, calls) is limited to 64 levels so no input can exhaust the stack.
"""

import json
import operator
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, NoReturn

__all__ = ["Trigger", "TriggerSyntaxError", "compile_trigger"]

MAX_NESTING = 64

_NAME_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_NAME_CHARS = _NAME_START | frozenset("0123456789-")
_DIGITS = frozenset("0123456789")
_KEYWORDS = frozenset({"and", "or", "in", "null", "true", "false"})
_LITERAL_KINDS = frozenset({"string", "number", "true", "false", "null"})
# Tokens that may follow a complete comparison; anything else after a lone value means a missing operator.
_FOLLOWERS = frozenset({"and", "or", ",", ")", "end"})
_NUMBER_RE = re.compile(r"[-+]?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_STRING_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "n": "\n", "r": "\r", "t": "\t"}
_HEX = frozenset("0123456789abcdefABCDEF")


class TriggerSyntaxError(ValueError):
    """A trigger that is not valid FQL. ``position`` is a 0-based index into ``source``."""

    def __init__(self, source: str, position: int, expected: str, found: str) -> None:
        self.source = source
        self.position = position
        self.expected = expected
        self.found = found
        super().__init__(f"trigger error at position {position}: expected {expected}, found {found} in: {source}")

    def __reduce__(self):  # keep it picklable despite the custom signature
        return (type(self), (self.source, self.position, self.expected, self.found))


class Trigger:
    """A compiled trigger. Build it with ``compile_trigger``."""

    __slots__ = ("source", "_root", "_fn", "event_types", "event_names")

    def __init__(self, source: str, root: "_Node") -> None:
        self.source = source
        self._root = root
        self._fn = root.fn
        # The event types (``type = "..."``) and track event names (``event = "..."``) this trigger can
        # only match, or None for any: the ingest's router skips triggers that cannot match.
        self.event_types: frozenset[str] | None = _required_values(root, "type")
        self.event_names: frozenset[str] | None = _required_values(root, "event")

    def matches(self, event: Mapping[str, Any]) -> bool:
        """Whether the event triggers the subscription. Never raises."""
        try:
            return self._fn(event)
        except Exception:
            # Only a hostile Mapping (or a structure too deep to compare) gets here: an event we cannot
            # read does not trigger anything.
            return False

    def _test_given(self, known: Mapping[str, str]) -> "_Fn | None":
        """The trigger's test for events whose top-level fields hold ``known`` (e.g. ``{"type": "track"}``);
        None when it is then always true.

        For the ingest's router, which picks the triggers by event type and name: a ``type = "..."``
        the router has checked is skipped. Pass only values the trigger allows (``event_types``,
        ``event_names``). Unlike ``matches`` it may raise (the caller falls back to ``matches``).
        """
        return _test_given(self._root, known)

    def explain(self, event: Mapping[str, Any]) -> str:
        """A sentence saying why the event matches or not. May quote event values: mask before logging."""
        try:
            return self._root.explain(event, self.source)
        except Exception as exc:
            return f"{self.source} could not be evaluated ({type(exc).__name__}), so it is false"

    def __repr__(self) -> str:
        return f"Trigger({self.source!r})"


def compile_trigger(source: str) -> Trigger:
    """Parse an FQL trigger once. Raises TriggerSyntaxError with the position of the first problem."""
    if not isinstance(source, str):
        raise TypeError(f"a trigger is a string, not {type(source).__name__}")
    root = _Parser(source).parse()
    return Trigger(source, root)


# ---------------------------------------------------------------------------------------------------------
# Values: FQL types over JSON-like Python data


class _Missing:
    """Marks a path that is absent (explain only: evaluation reads absent as null)."""

    def __repr__(self) -> str:
        return "missing"


_MISSING = _Missing()


def _kind(value: Any) -> str:
    t = type(value)
    if t is str:
        return "string"
    if t is bool:
        return "bool"
    if t is int or t is float:
        return "number"
    if value is None or value is _MISSING:
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


def _is_number(value: Any) -> bool:
    t = type(value)
    return t is int or t is float or (t is not bool and isinstance(value, int | float))


def _equal(left: Any, right: Any) -> bool:
    """FQL ``=``: same type and equal; lists and objects deeply."""
    kind = _kind(left)
    if kind != _kind(right) or kind == "unknown":
        return False
    if kind == "list":
        return len(left) == len(right) and all(_equal(a, b) for a, b in zip(left, right, strict=True))
    if kind == "object":
        return left.keys() == right.keys() and all(_equal(left[k], right[k]) for k in left)
    if kind == "null":
        return True
    return left == right


def _render(value: Any) -> str:
    """A short JSON-looking rendering for explanations (quotes show a string is a string)."""
    if value is _MISSING:
        return "missing"
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except Exception:
        text = object.__repr__(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ---------------------------------------------------------------------------------------------------------
# Tokenizer


class _Token:
    __slots__ = ("kind", "start", "end", "value", "plain")

    def __init__(self, kind: str, start: int, end: int, value: Any = None, plain: bool = False) -> None:
        self.kind = kind  # "string", "number", "path", "op", a keyword, a punctuation mark, "invalid", "end"
        self.start = start
        self.end = end
        self.value = value
        self.plain = plain  # a path that is one unescaped name: it may be a function name


def _found_char(source: str, index: int) -> str:
    return "end of input" if index >= len(source) else repr(source[index])


def _tokenize(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(source)
    while True:
        while i < n and source[i].isspace():
            i += 1
        if i >= n:
            tokens.append(_Token("end", n, n))
            return tokens
        c = source[i]
        if c == '"' or c == "'":
            token = _lex_string(source, i)
        elif c in _NAME_START or c == "\\":
            token = _lex_path(source, i)
        elif c in _DIGITS or (c in "-+" and i + 1 < n and source[i + 1] in _DIGITS):
            token = _lex_number(source, i)
        elif c in "!<>":
            two = source[i : i + 2] == c + "="
            text = source[i : i + 2] if two else c
            token = _Token("!" if text == "!" else "op", i, i + len(text), text)
        elif c == "=":
            token = _Token("op", i, i + 1, "=")
        elif c in "()[],":
            token = _Token(c, i, i + 1)
        else:
            # Let the parser report it: it knows what it expected here.
            token = _Token("invalid", i, i + 1)
        tokens.append(token)
        i = token.end


def _lex_string(source: str, start: int) -> _Token:
    quote = source[start]
    n = len(source)
    parts: list[str] = []
    i = start + 1
    while True:
        if i >= n:
            raise TriggerSyntaxError(
                source, n, f"{quote!r} to close the string that starts at position {start}", "end of input"
            )
        c = source[i]
        if c == quote:
            text = "".join(parts)
            if "\\u" in source[start:i]:
                text = _join_surrogates(text)
            return _Token("string", start, i + 1, text)
        if c != "\\":
            parts.append(c)
            i += 1
            continue
        escaped = source[i + 1 : i + 2]
        if escaped in _STRING_ESCAPES:
            parts.append(_STRING_ESCAPES[escaped])
            i += 2
        elif escaped == "u":
            digits = source[i + 2 : i + 6]
            if len(digits) != 4 or not set(digits) <= _HEX:
                raise TriggerSyntaxError(source, i, "4 hexadecimal digits after '\\u'", repr(source[i : i + 6]))
            parts.append(chr(int(digits, 16)))
            i += 6
        elif escaped:
            parts.append("\\" + escaped)  # not a string escape: keep it, e.g. a glob escape
            i += 2
        else:
            i += 1  # a backslash at the very end: reported as unterminated above


def _join_surrogates(text: str) -> str:
    """Turn \\ud83d\\ude00-style pairs into one character, as JSON does; leave lone halves alone."""
    try:
        return text.encode("utf-16", "surrogatepass").decode("utf-16")
    except UnicodeDecodeError:
        return text


def _lex_number(source: str, start: int) -> _Token:
    match = _NUMBER_RE.match(source, start)
    assert match is not None  # the caller saw a digit
    text = match.group()
    value: int | float
    if match.group(1) or match.group(2):
        value = float(text)
    else:
        try:
            value = int(text)
        except ValueError:  # more digits than int() accepts
            value = float(text)
    return _Token("number", start, match.end(), value)


def _lex_name(source: str, i: int) -> tuple[str, int, bool]:
    """One path segment from ``i``: (name, end, had an escape)."""
    n = len(source)
    chars: list[str] = []
    escaped = False
    while i < n:
        c = source[i]
        if c in _NAME_CHARS:
            chars.append(c)
            i += 1
        elif c == "\\":
            if i + 1 >= n:
                raise TriggerSyntaxError(source, n, "a character after '\\'", "end of input")
            chars.append(source[i + 1])
            i += 2
            escaped = True
        else:
            break
    return "".join(chars), i, escaped


def _lex_path(source: str, start: int) -> _Token:
    n = len(source)
    name, i, escaped = _lex_name(source, start)
    if not escaped and name in _KEYWORDS:
        return _Token(name, start, i)
    keys = [name]
    while i < n:
        if source[i] == ".":
            if i + 1 >= n or not (source[i + 1] in _NAME_CHARS or source[i + 1] == "\\"):
                raise TriggerSyntaxError(source, i + 1, "a field name after '.'", _found_char(source, i + 1))
            name, i, _ = _lex_name(source, i + 1)
            keys.append(name)
        elif source[i] == "[":
            j = i + 1
            while j < n and source[j] in _DIGITS:
                j += 1
            if j == i + 1:
                raise TriggerSyntaxError(source, j, "a list index (digits) after '['", _found_char(source, j))
            if j >= n or source[j] != "]":
                raise TriggerSyntaxError(source, j, "']'", _found_char(source, j))
            keys.append(source[i + 1 : j])
            i = j + 1
        else:
            break
    return _Token("path", start, i, tuple(keys), plain=len(keys) == 1 and not escaped)


# ---------------------------------------------------------------------------------------------------------
# Nodes. ``fn(event)`` evaluates; condition nodes (is_condition) always return a Python bool.

_Fn = Callable[[Any], Any]


class _Node:
    __slots__ = ("start", "end", "fn")
    is_condition = False

    def __init__(self, start: int, end: int, fn: _Fn) -> None:
        self.start = start
        self.end = end
        self.fn = fn

    def children(self) -> tuple["_Node", ...]:
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


class _Literal(_Node):
    __slots__ = ("value",)

    def __init__(self, start: int, end: int, value: Any) -> None:
        super().__init__(start, end, lambda event: value)
        self.value = value


class _Path(_Node):
    __slots__ = ("keys", "steps")

    def __init__(self, start: int, end: int, keys: tuple[str, ...]) -> None:
        # Each step keeps the key for objects and, when it is all digits, the index for lists.
        self.keys = keys
        self.steps = tuple((key, _list_index(key)) for key in keys)
        super().__init__(start, end, self._compile())

    def _compile(self) -> _Fn:
        if len(self.steps) == 1 and self.steps[0][1] is None:
            (key,) = self.keys

            def get_top(event: Any) -> Any:
                # The event is a Mapping, so .get is the fast road; absent reads as null.
                try:
                    return event.get(key)
                except AttributeError:
                    return None

            get_top.top_key = key  # type: ignore[attr-defined]  # for _equal_to_literal
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
        """Like fn, but tells a missing path (_MISSING) from an explicit null."""
        value = event
        for key, index in self.steps:
            if isinstance(value, list | tuple):
                value = value[index] if index is not None and index < len(value) else _MISSING
            elif isinstance(value, Mapping):
                value = value.get(key, _MISSING)
            else:
                return _MISSING
            if value is _MISSING:
                return _MISSING
        return value

    def facts(self, event: Any, source: str, out: list[str]) -> None:
        out.append(f"{self.text(source)} is {_render(self.lookup(event))}")


def _list_index(key: str) -> int | None:
    # Only short all-digit names can index a list (and int() refuses very long digit strings).
    return int(key) if key.isascii() and key.isdecimal() and len(key) < 19 else None


class _List(_Node):
    __slots__ = ("values",)

    def __init__(self, start: int, end: int, values: list[Any]) -> None:
        self.values = values
        super().__init__(start, end, lambda event: values)


class _Call(_Node):
    __slots__ = ("name", "args")

    def __init__(self, start: int, end: int, name: str, args: list[_Node], fn: _Fn) -> None:
        super().__init__(start, end, fn)
        self.name = name
        self.args = tuple(args)

    @property
    def is_condition(self) -> bool:  # type: ignore[override]
        return _FUNCTIONS[self.name][1]

    def children(self) -> tuple[_Node, ...]:
        return self.args

    def facts(self, event: Any, source: str, out: list[str]) -> None:
        super().facts(event, source, out)
        if not self.is_condition:
            out.append(f"{self.text(source)} is {_render(self.fn(event))}")


class _Comparison(_Node):
    __slots__ = ("op", "left", "right")
    is_condition = True

    def __init__(self, op: str, left: _Node, right: _Node) -> None:
        self.op, self.left, self.right = op, left, right
        super().__init__(left.start, right.end, _compare(op, left, right))

    def children(self) -> tuple[_Node, ...]:
        return (self.left, self.right)


class _Truthy(_Node):
    """A lone value used as a condition: true only when it is the boolean true."""

    __slots__ = ("operand",)
    is_condition = True

    def __init__(self, operand: _Node) -> None:
        self.operand = operand
        get = operand.fn

        def is_true(event: Any) -> bool:
            return get(event) is True

        super().__init__(operand.start, operand.end, is_true)

    def children(self) -> tuple[_Node, ...]:
        return (self.operand,)


class _Not(_Node):
    __slots__ = ("operand",)
    is_condition = True

    def __init__(self, start: int, operand: _Node) -> None:
        self.operand = operand = _as_condition(operand)
        test = operand.fn

        def negate(event: Any) -> bool:
            return not test(event)

        super().__init__(start, operand.end, negate)

    def children(self) -> tuple[_Node, ...]:
        return (self.operand,)

    def explain(self, event: Any, source: str) -> str:
        result = "true" if self.fn(event) else "false"
        return f"{self.text(source)} is {result} because {self.operand.explain(event, source)}"


class _Junction(_Node):
    """``and`` / ``or`` over two or more conditions."""

    __slots__ = ("word", "operands")
    is_condition = True

    def __init__(self, word: str, operands: list[_Node]) -> None:
        self.word = word
        self.operands = tuple(_as_condition(o) for o in operands)
        super().__init__(self.operands[0].start, self.operands[-1].end, self._compile())

    def _compile(self) -> _Fn:
        tests = [o.fn for o in self.operands]
        return _all_of(tests) if self.word == "and" else _any_of(tests)

    def children(self) -> tuple[_Node, ...]:
        return self.operands

    def explain(self, event: Any, source: str) -> str:
        # Name the operand that decided: the first false one of an ``and``, the first true one of an
        # ``or``; when every operand counted, name them all.
        deciding = self.word == "or"
        for operand in self.operands:
            if operand.fn(event) is deciding:
                return operand.explain(event, source)
        return "; ".join(operand.explain(event, source) for operand in self.operands)


def _all_of(tests: list[_Fn]) -> _Fn:
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:  # the common case, without a loop
        first, second = tests
        return lambda event: first(event) and second(event)
    tests = tuple(tests)

    def all_true(event: Any) -> bool:   # a plain loop: about twice as fast as all() over a generator
        for test in tests:
            if not test(event):
                return False
        return True

    return all_true


def _any_of(tests: list[_Fn]) -> _Fn:
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        first, second = tests
        return lambda event: first(event) or second(event)
    tests = tuple(tests)

    def any_true(event: Any) -> bool:
        for test in tests:
            if test(event):
                return True
        return False

    return any_true


def _as_condition(node: _Node) -> _Node:
    return node if node.is_condition else _Truthy(node)


# ---------------------------------------------------------------------------------------------------------
# Comparisons

_ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_MIRROR = {"=": "=", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


def _compare(op: str, left: _Node, right: _Node) -> _Fn:
    if op == "in":
        return _compare_in(left, right)
    if isinstance(left, _Literal) and not isinstance(right, _Literal):
        left, right, op = right, left, _MIRROR[op]  # put the literal on the right for the fast roads
    if op in ("=", "!="):
        equal = _equal_to_literal(left.fn, right.value) if isinstance(right, _Literal) else None
        if equal is None:
            get_left, get_right = left.fn, right.fn

            def equal(event: Any) -> bool:
                return _equal(get_left(event), get_right(event))

        if op == "=":
            return equal
        return lambda event: not equal(event)
    order = _ORDER[op]
    get = left.fn
    if isinstance(right, _Literal):
        bound = right.value
        if not _is_number(bound):
            return lambda event: False  # only numbers are ordered

        def ordered_literal(event: Any) -> bool:
            value = get(event)
            kind = type(value)  # _is_number inlined: this runs for every event
            if kind is int or kind is float or (kind is not bool and isinstance(value, int | float)):
                return order(value, bound)
            return False

        return ordered_literal
    get_right = right.fn

    def ordered(event: Any) -> bool:
        a, b = get(event), get_right(event)
        return _is_number(a) and _is_number(b) and order(a, b)

    return ordered


def _equal_to_literal(get: _Fn, literal: Any) -> _Fn | None:
    """Specialised ``path = literal`` tests: same answers as _equal, fewer steps."""
    if literal is None:
        return lambda event: get(event) is None
    if literal is True or literal is False:
        return lambda event: get(event) is literal
    if type(literal) is str:
        # == between a str and any other JSON type is already False.
        key = getattr(get, "top_key", None)
        if key is not None:
            # ``name = "text"`` on a top-level key: a dict event is read here, one call fewer.
            def equal_top(event: Any) -> bool:
                if type(event) is dict:
                    return event.get(key) == literal
                return get(event) == literal

            return equal_top
        return lambda event: get(event) == literal
    if _is_number(literal):
        return lambda event: _is_number(value := get(event)) and value == literal
    return None


def _compare_in(left: _Node, right: _Node) -> _Fn:
    get = left.fn
    if isinstance(right, _List) and right.values and all(type(v) is str for v in right.values):
        choices = frozenset(right.values)  # ``type in ["track", "identify"]``: one set lookup
        return lambda event: isinstance(value := get(event), str) and value in choices
    get_list = right.fn

    def contained(event: Any) -> bool:
        value, items = get(event), get_list(event)
        if _kind(value) not in ("string", "number", "bool", "null") or _kind(items) != "list":
            return False
        return any(_equal(value, item) for item in items)

    return contained


# ---------------------------------------------------------------------------------------------------------
# Functions: name -> (number of arguments, returns a condition, implementation)


def _glob_regex(pattern: str) -> tuple["re.Pattern[str] | None", str]:
    """Translate an FQL glob into a full-match regex, or (None, what was expected) if malformed."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            while i < n and pattern[i] == "*":  # runs of * match like one, and stop regex backtracking
                i += 1
            out.append(".*")
            continue
        if c == "?":
            out.append(".")
        elif c == "\\":
            if i + 1 >= n:
                return None, "a character after '\\' at the end of the glob pattern"
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "[":
            cls, i = _glob_class(pattern, i)
            if cls is None:
                return None, "']' to close the '[' of the glob pattern"
            out.append(cls)
            continue
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL), ""


def _glob_class(pattern: str, i: int) -> tuple[str | None, int]:
    """``[abc]``, ``[a-z]`` or ``[^abc]`` starting at pattern[i] == '['; (None, i) when malformed."""
    n = len(pattern)
    j = i + 1
    negate = j < n and pattern[j] == "^"
    j += negate
    items: list[str] = []

    def char_at(k: int) -> tuple[str | None, int]:
        if k < n and pattern[k] == "\\":
            return (pattern[k + 1], k + 2) if k + 1 < n else (None, k)
        return (pattern[k], k + 1) if k < n else (None, k)

    while j < n and (pattern[j] != "]" or not items):
        if pattern[j] == "]":  # an empty class matches nothing: call it malformed
            return None, i
        low, j = char_at(j)
        if low is None:
            return None, i
        if j + 1 < n and pattern[j] == "-" and pattern[j + 1] != "]":
            high, j = char_at(j + 1)
            if high is None or high < low:
                return None, i
            items.append(f"{re.escape(low)}-{re.escape(high)}")
        else:
            items.append(re.escape(low))
    if j >= n:
        return None, i
    return "[" + ("^" if negate else "") + "".join(items) + "]", j + 1


class _Glob:
    """A glob as its star-free segments, matched left to right without backtracking.

    ``a*b*c``: the text starts with ``a``, ends with ``c``, and between them holds ``b``; each middle segment is
    taken at its leftmost place, which is never worse for the segments after it. A segment is found by
    ``str.find`` (all literal) or by a regex without quantifiers (``?`` and classes), so a match costs at most
    the text's length times the longest segment's, whatever the number of stars (a regex ``.*a.*a.*b``
    backtracks polynomially in the number of stars).
    """

    def __init__(self, pattern: str) -> None:
        self.segments: list[tuple[int, str | None, re.Pattern[str] | None]] = []   # (length, literal, regex)
        self.starred = False
        tokens: list[tuple[str, str]] = []   # (literal char or "", regex text) of one segment
        i, n = 0, len(pattern)
        while i <= n:
            c = pattern[i] if i < n else "*"
            if c == "*":
                self.starred |= i < n
                self._add(tokens)
                tokens = []
                i += 1
                continue
            if c == "?":
                tokens.append(("", "."))
            elif c == "\\":
                i += 1
                tokens.append((pattern[i], re.escape(pattern[i])))
            elif c == "[":
                cls, i = _glob_class(pattern, i)
                tokens.append(("", cls or ""))
                continue
            else:
                tokens.append((c, re.escape(c)))
            i += 1

    def _add(self, tokens: list[tuple[str, str]]) -> None:
        if all(literal for literal, _ in tokens):
            self.segments.append((len(tokens), "".join(literal for literal, _ in tokens), None))
        else:
            self.segments.append((len(tokens), None, re.compile("".join(r for _, r in tokens), re.DOTALL)))

    @staticmethod
    def _at(segment: tuple[int, str | None, re.Pattern[str] | None], text: str, pos: int) -> bool:
        size, literal, regex = segment
        if literal is not None:
            return text.startswith(literal, pos)
        return regex.match(text, pos, pos + size) is not None

    def matches(self, text: str) -> bool:
        segments = self.segments
        if not self.starred:
            return len(text) == segments[0][0] and self._at(segments[0], text, 0)
        first, last = segments[0], segments[-1]
        pos, end = first[0], len(text) - last[0]
        if end < pos or not self._at(first, text, 0) or not self._at(last, text, end):
            return False
        for size, literal, regex in segments[1:-1]:
            if size == 0:
                continue
            if literal is not None:
                found = text.find(literal, pos, end)
            else:
                hit = regex.search(text, pos, end)
                found = hit.start() if hit else -1
            if found < 0:
                return False
            pos = found + size
        return True


# A pattern read from the event (``match(event, properties.pattern)``) longer than this never matches: the
# matcher's worst case is the text's length times the pattern's, and both would be the caller's.
MAX_EVENT_GLOB = 256


@lru_cache(maxsize=256)
def _glob(pattern: str) -> _Glob | None:
    """The matcher of a well-formed glob (None when malformed), built once per pattern."""
    return _Glob(pattern) if _glob_regex(pattern)[0] is not None else None


def _contains(text: Any, part: Any) -> bool:
    return isinstance(text, str) and isinstance(part, str) and part in text


def _match(text: Any, pattern: Any) -> bool:
    if not (isinstance(text, str) and isinstance(pattern, str)):
        return False
    glob = _glob(pattern) if len(pattern) <= MAX_EVENT_GLOB else None
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
    if _is_number(value):
        return value
    if isinstance(value, str) and _NUMERIC_TEXT.fullmatch(value):
        try:
            return float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            return float(value)
    return None


def _string(value: Any) -> Any:
    kind = _kind(value)
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
    kind = _kind(value)
    if kind == "bool":
        return value
    if kind == "number":
        return value != 0
    if kind == "string":
        return value.strip().lower() in ("true", "1")
    if kind == "list":
        return len(value) > 0
    return False


_FUNCTIONS: dict[str, tuple[int, bool, Callable[..., Any]]] = {
    "contains": (2, True, _contains),
    "match": (2, True, _match),
    "length": (1, False, _length),
    "lowercase": (1, False, _string_function(str.lower)),
    "uppercase": (1, False, _string_function(str.upper)),
    "snakecase": (1, False, _string_function(lambda s: s.replace(" ", "_"))),
    "kebabcase": (1, False, _string_function(lambda s: s.replace(" ", "-"))),
    "titlecase": (1, False, _string_function(_titlecase)),
    "typeof": (1, False, _kind),
    "bool": (1, True, _bool),
    "string": (1, False, _string),
    "number": (1, False, _number),
}
_KNOWN_FUNCTIONS = ", ".join(sorted(_FUNCTIONS))


def _call_fn(name: str, args: list[_Node], glob: "_Glob | None") -> _Fn:
    implementation = _FUNCTIONS[name][2]
    if len(args) == 1:
        get = args[0].fn
        return lambda event: implementation(get(event))
    get_first, get_second = args[0].fn, args[1].fn
    if glob is not None:  # match() with a literal pattern: compiled once, here
        matches = glob.matches
        return lambda event: isinstance(text := get_first(event), str) and matches(text)
    return lambda event: implementation(get_first(event), get_second(event))


# ---------------------------------------------------------------------------------------------------------
# Parser: recursive descent over the token list


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = _tokenize(source)
        self.index = 0

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        if token.kind != "end":
            self.index += 1
        return token

    def fail(self, expected: str, token: _Token | None = None) -> NoReturn:
        token = token or self.peek()
        raise TriggerSyntaxError(self.source, token.start, expected, self.describe(token))

    def describe(self, token: _Token) -> str:
        if token.kind == "end":
            return "end of input"
        text = self.source[token.start : token.end]
        if token.kind == "string":
            return text if len(text) <= 40 else text[:37] + "..."
        return repr(text if len(text) <= 40 else text[:37] + "...")

    def parse(self) -> _Node:
        if self.peek().kind == "end":
            self.fail("a condition")
        node = self.parse_or(0, comma_is_and=True)
        if self.peek().kind != "end":
            self.fail("'and', 'or' or end of input")
        return _as_condition(node)

    def nest(self, depth: int, token: _Token) -> int:
        if depth >= MAX_NESTING:
            self.fail(f"at most {MAX_NESTING} levels of nesting", token)
        return depth + 1

    def parse_or(self, depth: int, comma_is_and: bool) -> _Node:
        operands = [self.parse_and(depth, comma_is_and)]
        while self.peek().kind == "or":
            self.advance()
            operands.append(self.parse_and(depth, comma_is_and))
        return operands[0] if len(operands) == 1 else _Junction("or", operands)

    def parse_and(self, depth: int, comma_is_and: bool) -> _Node:
        # In function arguments a comma separates arguments, so it only means ``and`` elsewhere.
        words = ("and", ",") if comma_is_and else ("and",)
        operands = [self.parse_not(depth)]
        while self.peek().kind in words:
            self.advance()
            operands.append(self.parse_not(depth))
        return operands[0] if len(operands) == 1 else _Junction("and", operands)

    def parse_not(self, depth: int) -> _Node:
        if self.peek().kind == "!":
            token = self.advance()
            return _Not(token.start, self.parse_not(self.nest(depth, token)))
        return self.parse_comparison(depth)

    def parse_comparison(self, depth: int) -> _Node:
        left = self.parse_operand(depth)
        token = self.peek()
        if token.kind == "op" or token.kind == "in":
            self.advance()
            right = self.parse_operand(depth)
            return _Comparison(token.value if token.kind == "op" else "in", left, right)
        if token.kind not in _FOLLOWERS:
            self.fail("an operator")
        return left

    def parse_operand(self, depth: int) -> _Node:
        token = self.peek()
        kind = token.kind
        if kind in _LITERAL_KINDS:
            self.advance()
            return _Literal(token.start, token.end, _literal_value(token))
        if kind == "path":
            if token.plain and self.tokens[self.index + 1].kind == "(":
                return self.parse_call(depth)
            self.advance()
            return _Path(token.start, token.end, token.value)
        if kind == "(":
            self.advance()
            inner = self.parse_or(self.nest(depth, token), comma_is_and=True)
            closing = self.peek()
            if closing.kind != ")":
                self.fail("')'")
            self.advance()
            inner.start, inner.end = token.start, closing.end  # the text of a group includes its parentheses
            return inner
        if kind == "[":
            return self.parse_list()
        self.fail("a value")

    def parse_call(self, depth: int) -> _Node:
        name_token = self.advance()
        name = name_token.value[0]
        if name not in _FUNCTIONS:
            self.fail(f"a known function ({_KNOWN_FUNCTIONS})", name_token)
        arity = _FUNCTIONS[name][0]
        depth = self.nest(depth, name_token)
        self.advance()  # "("
        plural = "argument" if arity == 1 else "arguments"
        args: list[_Node] = []
        while len(args) < arity:
            if args:
                if self.peek().kind != ",":
                    self.fail(f"',' ({name} takes {arity} {plural})")
                self.advance()
            args.append(self.parse_or(depth, comma_is_and=False))
        closing = self.peek()
        if closing.kind != ")":
            self.fail(f"')' ({name} takes {arity} {plural})")
        self.advance()
        glob = None
        if name == "match" and isinstance(args[1], _Literal) and isinstance(args[1].value, str):
            regex, problem = _glob_regex(args[1].value)
            if regex is None:
                pattern = args[1]
                raise TriggerSyntaxError(self.source, pattern.start, problem, pattern.text(self.source))
            glob = _Glob(args[1].value)
        return _Call(name_token.start, closing.end, name, args, _call_fn(name, args, glob))

    def parse_list(self) -> _Node:
        opening = self.advance()
        values: list[Any] = []
        if self.peek().kind == "]":
            return _List(opening.start, self.advance().end, values)
        while True:
            token = self.peek()
            if token.kind not in _LITERAL_KINDS:
                self.fail("a literal (string, number, true, false or null) in the list")
            values.append(_literal_value(self.advance()))
            token = self.advance()
            if token.kind == "]":
                return _List(opening.start, token.end, values)
            if token.kind != ",":
                self.fail("',' or ']'", token)


def _literal_value(token: _Token) -> Any:
    if token.kind in ("string", "number"):
        return token.value
    return {"true": True, "false": False, "null": None}[token.kind]


def _required_values(node: _Node, key: str) -> frozenset[str] | None:
    """The texts the top-level field ``key`` must hold for ``node`` to be true; None when it may hold anything.

    From ``key = "x"`` and ``key in ["x", "y"]``, through ``and`` (both hold) and ``or`` (either).
    """
    if isinstance(node, _Comparison):
        return _field_choices(node, key)
    if isinstance(node, _Junction):
        found = [_required_values(operand, key) for operand in node.operands]
        if node.word == "and":
            known = [values for values in found if values is not None]
            return frozenset.intersection(*known) if known else None
        return None if any(values is None for values in found) else frozenset().union(*found)
    return None


def _field_choices(node: _Comparison, key: str) -> frozenset[str] | None:
    """For ``key = "x"`` (either way round) or ``key in [texts]``: the texts that make it true; else None."""
    if node.op == "=":
        for path, literal in ((node.left, node.right), (node.right, node.left)):
            if (isinstance(path, _Path) and path.keys == (key,) and isinstance(literal, _Literal)
                    and type(literal.value) is str):
                return frozenset((literal.value,))
    elif node.op == "in":
        right = node.right
        if (isinstance(node.left, _Path) and node.left.keys == (key,) and isinstance(right, _List) and right.values
                and all(type(v) is str for v in right.values)):
            return frozenset(right.values)
    return None


def _test_given(node: _Node, known: Mapping[str, str]) -> _Fn | None:
    """``node.fn`` for events whose top-level fields hold the ``known`` texts (None: always true).

    For the router, which picks the triggers by these fields: a condition on them is then known true
    (left out) or known false (an ``or`` drops that branch), so less is evaluated per event.
    """
    if _settled(node, known):
        return None
    if not _may_hold(node, known):
        return _never
    if isinstance(node, _Junction):
        tests = [_test_given(operand, known) for operand in node.operands]
        if node.word == "and":
            if _never in tests:
                return _never
            rest = [test for test in tests if test is not None]
            return _all_of(rest) if rest else None
        if any(test is None for test in tests):
            return None
        live = [test for test in tests if test is not _never]
        return _any_of(live) if live else _never
    return node.fn


def _settled(node: _Node, known: Mapping[str, str]) -> bool:
    """A comparison of one known field that its known text makes true."""
    return isinstance(node, _Comparison) and any(
        (choices := _field_choices(node, key)) is not None and value in choices for key, value in known.items())


def _may_hold(node: _Node, known: Mapping[str, str]) -> bool:
    """False when the known texts rule ``node`` out (it requires other values of those fields)."""
    return all((required := _required_values(node, key)) is None or value in required for key, value in known.items())


def _never(event: Any) -> bool:
    return False
