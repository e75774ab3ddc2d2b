"""What a trigger requires of an event's top-level fields (type, event name), for the ingest's router."""

from collections.abc import Mapping
from typing import Any

from segment_qualtrics.segment.fql.evaluate import Comparison, Fn, Junction, List, Literal, Node, Path, all_of, any_of


def required_values(node: Node, key: str) -> frozenset[str] | None:
    """The texts the top-level field ``key`` must hold for ``node`` to be true; None when it may hold anything.

    From ``key = "x"`` and ``key in ["x", "y"]``, through ``and`` (both hold) and ``or`` (either).
    """
    if isinstance(node, Comparison):
        return _field_choices(node, key)
    if isinstance(node, Junction):
        found = [required_values(operand, key) for operand in node.operands]
        if node.word == "and":
            known = [values for values in found if values is not None]
            return frozenset.intersection(*known) if known else None
        known = [values for values in found if values is not None]
        return frozenset().union(*known) if len(known) == len(found) else None
    return None


def _field_choices(node: Comparison, key: str) -> frozenset[str] | None:
    """For ``key = "x"`` (either way round) or ``key in [texts]``: the texts that make it true; else None."""
    if node.op == "=":
        for path, literal in ((node.left, node.right), (node.right, node.left)):
            if (isinstance(path, Path) and path.keys == (key,) and isinstance(literal, Literal)
                    and type(literal.value) is str):
                return frozenset((literal.value,))
    elif node.op == "in":
        right = node.right
        if (isinstance(node.left, Path) and node.left.keys == (key,) and isinstance(right, List) and right.values
                and all(type(v) is str for v in right.values)):
            return frozenset(right.values)
    return None


def test_given(node: Node, known: Mapping[str, str]) -> Fn | None:
    """``node.fn`` for events whose top-level fields hold the ``known`` texts (None: always true).

    For the router, which picks the triggers by these fields: a condition on them is then known true
    (left out) or known false (an ``or`` drops that branch), so less is evaluated per event.
    """
    if _settled(node, known):
        return None
    if not _may_hold(node, known):
        return _never
    if isinstance(node, Junction):
        tests = [test_given(operand, known) for operand in node.operands]
        if node.word == "and":
            if _never in tests:
                return _never
            rest = [test for test in tests if test is not None]
            return all_of(rest) if rest else None
        if any(test is None for test in tests):
            return None
        live = [test for test in tests if test is not None and test is not _never]
        return any_of(live) if live else _never
    return node.fn


def _settled(node: Node, known: Mapping[str, str]) -> bool:
    """A comparison of one known field that its known text makes true."""
    return isinstance(node, Comparison) and any(
        (choices := _field_choices(node, key)) is not None and value in choices for key, value in known.items())


def _may_hold(node: Node, known: Mapping[str, str]) -> bool:
    """False when the known texts rule ``node`` out (it requires other values of those fields)."""
    return all((required := required_values(node, key)) is None or value in required for key, value in known.items())


def _never(event: Any) -> bool:
    return False
