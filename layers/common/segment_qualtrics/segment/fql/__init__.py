"""Subscription triggers (FQL): the module is being split; see evaluate.py."""

from segment_qualtrics.segment.fql.evaluate import (  # noqa: F401
    MAX_EVENT_GLOB,
    MAX_NESTING,
    Trigger,
    TriggerSyntaxError,
    _glob,
    _glob_regex,
    compile_trigger,
)
