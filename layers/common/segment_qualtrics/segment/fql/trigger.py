"""The compiled trigger: the public face of the FQL package."""

from collections.abc import Callable, Mapping
from typing import Any

from segment_qualtrics.segment.fql.evaluate import Fn, Node
from segment_qualtrics.segment.fql.index import required_values, test_given
from segment_qualtrics.segment.fql.parser import Parser


class Trigger:
    """A compiled trigger. Build it with ``compile_trigger``."""

    __slots__ = ("source", "_root", "_fn", "event_types", "event_names")

    def __init__(self, source: str, root: Node) -> None:
        self.source = source
        self._root = root
        self._fn: Callable[[Any], bool] = root.fn
        # The event types (``type = "..."``) and track event names (``event = "..."``) this trigger can
        # only match, or None for any: the ingest's router skips triggers that cannot match.
        self.event_types: frozenset[str] | None = required_values(root, "type")
        self.event_names: frozenset[str] | None = required_values(root, "event")

    def matches(self, event: Mapping[str, Any]) -> bool:
        """Whether the event triggers the subscription. Never raises."""
        try:
            return self._fn(event)
        except Exception:
            # Only a hostile Mapping (or a structure too deep to compare) gets here: an event we cannot
            # read does not trigger anything.
            return False

    def test_given(self, known: Mapping[str, str]) -> Fn | None:
        """The trigger's test for events whose top-level fields hold ``known`` (e.g. ``{"type": "track"}``);
        None when it is then always true.

        For the ingest's router, which picks the triggers by event type and name: a ``type = "..."``
        the router has checked is skipped. Pass only values the trigger allows (``event_types``,
        ``event_names``). Unlike ``matches`` it may raise (the caller falls back to ``matches``).
        """
        return test_given(self._root, known)

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
    root = Parser(source).parse()
    return Trigger(source, root)
