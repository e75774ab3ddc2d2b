"""Limits on what a mapping may build or walk, and the errors mapping-kit raises."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

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


def too_long(what: str) -> str:
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
        children: Iterable[Any]
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


def too_deep(what: str) -> str:
    return f"{what} is nested deeper than {MAX_VALUE_DEPTH} levels"


class MappingError(ValueError):
    """A mapping is invalid, or a directive cannot be resolved against an event.

    ``problems`` lists every problem found, each starting with where it is, for example
    ``'email: unknown directive "@pathh"'``.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems: list[str] = list(problems)
        super().__init__("; ".join(self.problems))


class DirectiveError(Exception):
    """Raised while resolving; turned into a MappingError that names the field."""
