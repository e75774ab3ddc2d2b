"""mapping-kit: the module is being split; see directives.py."""

from segment_qualtrics.segment.mapping_kit.directives import *  # noqa: F403
from segment_qualtrics.segment.mapping_kit.directives import (  # noqa: F401
    MAX_MERGED_STRING_CHARS,
    MAX_PATTERN_LENGTH,
    MAX_REPLACEMENT_LENGTH,
    MAX_TEXT_CHARS,
    MAX_VALUE_DEPTH,
    _js_json,
    _js_number,
    value_depth_exceeds,
)
