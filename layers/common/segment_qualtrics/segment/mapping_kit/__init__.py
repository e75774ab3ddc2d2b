"""Segment mapping-kit in pure Python: resolve a subscription's field mapping against a Segment event.

Behaviour follows Segment's actions-core (segmentio/action-destinations, ``packages/core/src``):
``mapping-kit/index.ts`` (the directives), ``mapping-kit/validate.ts`` plus the ``schema-fixtures``
(validation), ``mapping-kit/flatten.ts``, ``mapping-kit/placeholders.ts`` (``@template``),
``get.ts`` (path lookup) and ``remove-undefined.ts``.

A mapping value is either a raw JSON value (returned as is; objects and arrays are walked so that
directives nested in them are resolved) or a directive: an object with one ``@``-prefixed key, such as
``{"@path": "$.traits.email"}``. JavaScript's ``undefined`` ("resolved to nothing") is ``UNDEFINED``;
it is dropped from objects at the end, as ``JSON.stringify`` would drop it.

Where JavaScript semantics leak into the results (truthiness, ``String(x)``, ``JSON.stringify``,
``a && a[key]`` in the path lookup), they are reproduced on purpose so that a mapping copied from
Segment gives the same payload here.

Modules: ``js`` (JavaScript semantics: undefined, truthiness, String(), JSON.stringify), ``paths`` (get.ts),
``limits`` (sizes, depths, errors), ``engine`` (the registry, resolving and validating walks, entry points),
``directives`` (each directive's resolver next to its validator).
"""

from segment_qualtrics.segment.mapping_kit import directives as _directives  # noqa: F401  (registers them)
from segment_qualtrics.segment.mapping_kit.engine import resolve_mapping, resolve_value, validate_mapping
from segment_qualtrics.segment.mapping_kit.js import UNDEFINED
from segment_qualtrics.segment.mapping_kit.limits import (
    MAX_MERGED_STRING_CHARS,
    MAX_PATTERN_LENGTH,
    MAX_REPLACEMENT_LENGTH,
    MAX_TEXT_CHARS,
    MAX_VALUE_DEPTH,
    MappingError,
    value_depth_exceeds,
)
from segment_qualtrics.segment.mapping_kit.paths import compile_path

__all__ = [
    "MAX_MERGED_STRING_CHARS",
    "MAX_PATTERN_LENGTH",
    "MAX_REPLACEMENT_LENGTH",
    "MAX_TEXT_CHARS",
    "MAX_VALUE_DEPTH",
    "UNDEFINED",
    "MappingError",
    "compile_path",
    "resolve_mapping",
    "resolve_value",
    "validate_mapping",
    "value_depth_exceeds",
]
