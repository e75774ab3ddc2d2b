"""``match()``'s glob patterns: validated as a regex, matched segment by segment without backtracking."""

import re
from functools import lru_cache


def glob_regex(pattern: str) -> tuple["re.Pattern[str] | None", str]:
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


class Glob:
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
        assert regex is not None   # a segment holds a literal or a regex (_add)
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
                assert regex is not None   # a segment holds a literal or a regex (_add)
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
def cached_glob(pattern: str) -> Glob | None:
    """The matcher of a well-formed glob (None when malformed), built once per pattern."""
    return Glob(pattern) if glob_regex(pattern)[0] is not None else None
