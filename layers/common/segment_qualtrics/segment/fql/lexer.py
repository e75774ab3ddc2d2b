"""FQL tokenizer: the source text as a list of tokens, and the error every syntax problem raises."""

import re
from typing import Any

_NAME_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_NAME_CHARS = _NAME_START | frozenset("0123456789-")
_DIGITS = frozenset("0123456789")
_KEYWORDS = frozenset({"and", "or", "in", "null", "true", "false"})

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

    def __reduce__(self) -> tuple[type["TriggerSyntaxError"], tuple[str, int, str, str]]:  # picklable: own signature
        return (type(self), (self.source, self.position, self.expected, self.found))


class Token:
    __slots__ = ("kind", "start", "end", "value", "plain")

    def __init__(self, kind: str, start: int, end: int, value: Any = None, plain: bool = False) -> None:
        self.kind = kind  # "string", "number", "path", "op", a keyword, a punctuation mark, "invalid", "end"
        self.start = start
        self.end = end
        self.value = value
        self.plain = plain  # a path that is one unescaped name: it may be a function name


def _found_char(source: str, index: int) -> str:
    return "end of input" if index >= len(source) else repr(source[index])


def tokenize(source: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(source)
    while True:
        while i < n and source[i].isspace():
            i += 1
        if i >= n:
            tokens.append(Token("end", n, n))
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
            token = Token("!" if text == "!" else "op", i, i + len(text), text)
        elif c == "=":
            token = Token("op", i, i + 1, "=")
        elif c in "()[],":
            token = Token(c, i, i + 1)
        else:
            # Let the parser report it: it knows what it expected here.
            token = Token("invalid", i, i + 1)
        tokens.append(token)
        i = token.end


def _lex_string(source: str, start: int) -> Token:
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
            return Token("string", start, i + 1, text)
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


def _lex_number(source: str, start: int) -> Token:
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
    return Token("number", start, match.end(), value)


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


def _lex_path(source: str, start: int) -> Token:
    n = len(source)
    name, i, escaped = _lex_name(source, start)
    if not escaped and name in _KEYWORDS:
        return Token(name, start, i)
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
    return Token("path", start, i, tuple(keys), plain=len(keys) == 1 and not escaped)
