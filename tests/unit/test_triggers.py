"""Subscription triggers: Segment's FQL (see the module docstring for the grammar and interpretations)."""

import json
import math
import pickle
from collections.abc import Iterator, Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from segment_qualtrics.segment.fql import (
    MAX_EVENT_GLOB,
    MAX_NESTING,
    Trigger,
    TriggerSyntaxError,
    compile_trigger,
)
from segment_qualtrics.segment.fql.glob import cached_glob as _glob
from segment_qualtrics.segment.fql.glob import glob_regex as _glob_regex

IDENTIFY_DEFAULT = 'type = "identify"'
TRANSACTION_DEFAULT = 'type = "track" and event = "Transaction Created"'
TRANSACTION_DEFAULT_AS_SEGMENT_WRITES_IT = 'type = "track", event = "Transaction Created"'

TRACK_TRANSACTION = {
    "type": "track",
    "event": "Transaction Created",
    "userId": "user-1",
    "anonymousId": None,
    "messageId": "m-1",
    "properties": {"total": 120, "currency": "EUR", "items": [{"sku": "a-1"}, {"sku": "b-2"}]},
    "context": {"page": {"path": "/checkout/done"}, "library": {"name": "analytics.js"}},
}
TRACK_ORDER = {**TRACK_TRANSACTION, "event": "Order Completed"}
IDENTIFY = {"type": "identify", "userId": "user-1", "traits": {"email": "Ada@Example.com", "plan": "pro"}}


def matches(source: str, event: Mapping) -> bool:
    return compile_trigger(source).matches(event)


def syntax_error(source: str) -> TriggerSyntaxError:
    with pytest.raises(TriggerSyntaxError) as caught:
        compile_trigger(source)
    return caught.value


# --- Segment's default triggers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "identify", "transaction"),
    [
        (IDENTIFY, True, False),
        (TRACK_TRANSACTION, False, True),
        (TRACK_ORDER, False, False),
        ({"type": "page", "name": "Home"}, False, False),
        ({"type": "identify", "event": "Transaction Created"}, True, False),
        ({"event": "Transaction Created"}, False, False),
        ({}, False, False),
    ],
)
def test_default_triggers(event, identify, transaction):
    assert matches(IDENTIFY_DEFAULT, event) is identify
    assert matches(TRANSACTION_DEFAULT, event) is transaction
    # Segment's Qualtrics code writes the second default with a comma; it means the same.
    assert matches(TRANSACTION_DEFAULT_AS_SEGMENT_WRITES_IT, event) is transaction


def test_compiled_trigger_keeps_its_source():
    trigger = compile_trigger(TRANSACTION_DEFAULT)
    assert isinstance(trigger, Trigger)
    assert trigger.source == TRANSACTION_DEFAULT
    assert repr(trigger) == f"Trigger({TRANSACTION_DEFAULT!r})"


# --- Examples from Segment's FQL docs ----------------------------------------------------------------------

DOCS_EVENT = {
    "event": "Button Clicked",
    "type": "track",
    "context": {"library": {"name": "analytics.js", "version": "1.0"}},
    "properties": {"features": ["discounts", "dark-mode"]},
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("event = 'Button Clicked'", True),
        ("event = 'Screen Tapped'", False),
        ("context.path.path = '/login'", False),
        ("type = 'identify' or type = 'track'", True),
        ("event = 'Button Clicked' and type = 'track'", True),
        ("match( context.library.version, '1.*' )", True),
        ("match( context.library.version, '2.*' )", False),
        ("type = 'track' and ( event = 'Click' or match( event, 'Button *' ) )", True),
        ("!contains( context.library.name, 'js' )", False),
        ("'dark-mode' in properties.features", True),
        ("'blink' in properties.features", False),
        ("!( type in ['track', 'identify'] )", False),
    ],
)
def test_docs_examples(source, expected):
    assert matches(source, DOCS_EVENT) is expected


def test_docs_subexpression_examples_compile():
    compile_trigger("type = 'track' and ( event = 'Click' or match( 'Button *', event ) )")
    source = (
        "( type = 'track' or type = 'identify' ) and ( properties.enabled or match( traits.email, '*@company.com' ) )"
    )
    trigger = compile_trigger(source)
    assert trigger.matches({"type": "identify", "traits": {"email": "ada@company.com"}})
    assert trigger.matches({"type": "track", "properties": {"enabled": True}})
    assert not trigger.matches({"type": "track", "properties": {"enabled": "yes"}})
    assert not trigger.matches({"type": "page", "properties": {"enabled": True}})


def test_docs_escaping_example():
    event = {"properties": {"product 1": {"price": "19.99"}}}
    assert matches(r'properties.product\ 1.price = "19.99"', event)


@pytest.mark.parametrize(
    ("text", "pattern", "expected"),
    [
        ("abcd", "a*d", True),
        ("", "*", True),
        ("abc", "ab", False),
        ("abcd", "a??d", True),
        ("abcd", "*d", True),
        ("ab*d", r"ab\*d", True),
        ("abCd", "ab[cC]d", True),
        ("abcd", "ab[a-z]d", True),
        ("abcd", "ab[A-Z]d", False),
    ],
)
def test_docs_glob_table(text, pattern, expected):
    assert matches(f"match(event, '{pattern}')", {"event": text}) is expected


@pytest.mark.parametrize(
    "source",
    [
        "contains( userId, 'x' ) = false",
        "length( userId ) = 0",
        "lowercase( userId ) = null",
        "typeof( userId ) = 'null'",
        "match( userId, '*' ) = false",
    ],
)
@pytest.mark.parametrize("event", [{}, {"userId": None}])
def test_docs_null_defaults_of_functions(source, event):
    assert matches(source, event)


def test_docs_length_instead_of_typeof():
    assert matches("length( userId ) > 0", {"userId": "u"})
    assert not matches("length( userId ) > 0", {"userId": ""})
    assert not matches("length( userId ) > 0", {})


# --- Operators and types -----------------------------------------------------------------------------------

NUMBERS = {"properties": {"total": 100, "price": 19.5, "flag": True, "text": "100", "zero": 0}}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("properties.total = 100", True),
        ("properties.total = 100.0", True),
        ("properties.total != 100", False),
        ("properties.total != 99", True),
        ("properties.total < 100", False),
        ("properties.total <= 100", True),
        ("properties.total > 99.5", True),
        ("properties.total >= 100.5", False),
        ("properties.price < 20", True),
        ("properties.price > -1e3", True),
        ("properties.price >= 1.95e1", True),
        ("properties.total > properties.price", True),
        ("+100 = properties.total", True),
        ("99 < properties.total", True),  # a literal on the left is mirrored, not misread
        ("100 <= properties.price", False),
        # numbers are compared numerically, not as text
        ("properties.total > 9", True),
        # a string is never a number, whatever it spells
        ('properties.total = "100"', False),
        ("properties.text = 100", False),
        ("properties.text > 5", False),
        ('properties.total > "5"', False),
        ('event > "a"', False),  # only numbers are ordered
        # booleans are neither numbers nor equal to them
        ("properties.flag = 1", False),
        ("properties.flag = true", True),
        ("properties.flag > 0", False),
        ("properties.zero = false", False),
        ("properties.zero = null", False),
        # a missing value is null, and ordering it is false, never an error
        ("properties.missing < 1", False),
        ("properties.missing >= 1", False),
        ("properties.missing = null", True),
    ],
)
def test_comparisons(source, expected):
    assert matches(source, NUMBERS) is expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('properties.features = ["discounts", "dark-mode"]', True),
        ('properties.features = ["dark-mode", "discounts"]', False),
        ('properties.features != ["discounts"]', True),
        ("properties.features = []", False),
        ("context.library = context.library", True),
        ("context.library = properties", False),
        ('context.library = "analytics.js"', False),
    ],
)
def test_lists_and_objects_compare_deeply(source, expected):
    assert matches(source, DOCS_EVENT) is expected


@pytest.mark.parametrize(
    ("event", "is_null", "exists"),
    [
        ({}, True, False),
        ({"userId": None}, True, False),
        ({"userId": ""}, False, True),
        ({"userId": 0}, False, True),
        ({"userId": False}, False, True),
        ({"userId": "u"}, False, True),
    ],
)
def test_null_means_missing_or_null(event, is_null, exists):
    assert matches("userId = null", event) is is_null
    assert matches("userId != null", event) is exists
    assert matches("null = userId", event) is is_null


def test_existence_of_nested_properties():
    assert matches("properties.total != null", TRACK_TRANSACTION)
    assert matches("properties.discount = null", TRACK_TRANSACTION)
    assert matches("traits.email = null", TRACK_TRANSACTION)  # no traits at all
    assert matches("properties.total.amount = null", TRACK_TRANSACTION)  # through a number


def test_in_operator():
    event = {"type": "track", "properties": {"n": 1.0, "tags": ["a", 1, None, True]}}
    assert matches('type in ["track", "identify"]', event)
    assert not matches('type in ["page"]', event)
    assert not matches("type in []", event)
    assert matches("properties.n in [2, 1]", event)
    assert matches('"a" in properties.tags', event)
    assert matches("null in properties.tags", event)
    assert matches("1 in properties.tags", event)
    assert not matches("false in properties.tags", event)
    assert not matches("true in [1]", event)  # bool is not a number
    assert not matches('"a" in type', event)  # the right side must be a list
    assert not matches("properties.tags in [1]", event)  # the left side must not be a list
    assert not matches("properties.missing in properties.missing", event)


def test_bare_value_is_a_condition_only_when_true():
    assert matches("properties.vip", {"properties": {"vip": True}})
    assert not matches("properties.vip", {"properties": {"vip": "true"}})
    assert not matches("properties.vip", {"properties": {"vip": 1}})
    assert not matches("properties.vip", {})
    assert matches("!properties.vip", {})
    assert matches("true", {})
    assert not matches("false or null", {})


# --- Precedence ----------------------------------------------------------------------------------------------


def test_and_binds_tighter_than_or():
    event = {"type": "track", "event": "x"}
    # a or (b and c): true because a is; (a or b) and c would be false.
    assert matches('type = "track" or event = "y" and userId = "u"', event)
    assert matches('event = "y" and userId = "u" or type = "track"', event)
    assert not matches('(type = "track" or event = "y") and userId = "u"', event)


def test_comma_is_and_with_the_same_precedence():
    source = 'type = "page" or type = "track", event = "x"'  # page or (track and x)
    assert matches(source, {"type": "track", "event": "x"})
    assert not matches(source, {"type": "track", "event": "y"})
    assert matches(source, {"type": "page"})
    assert matches('(type = "track", event = "x"), userId = "u"', {"type": "track", "event": "x", "userId": "u"})


def test_not_with_parentheses():
    source = '!(type = "track" or type = "identify")'
    assert not matches(source, TRACK_ORDER)
    assert not matches(source, IDENTIFY)
    assert matches(source, {"type": "page"})
    assert matches('!(type = "track") and event = "Order Completed"', {"type": "page", "event": "Order Completed"})


def test_not_negates_a_whole_comparison():
    assert matches('!type = "track"', {"type": "page"})
    assert not matches('!type = "track"', {"type": "track"})
    assert matches('!!type = "track"', {"type": "track"})
    # ! binds tighter than and/or
    assert matches('!type = "track" or event = "x"', {"type": "track", "event": "x"})
    assert not matches('!type = "track" and event = "x"', {"type": "track", "event": "x"})


def test_keywords_are_lowercase():
    error = syntax_error('type = "a" AND event = "b"')
    assert (error.position, error.expected, error.found) == (11, "'and', 'or' or end of input", "'AND'")


# --- Paths ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "event", "expected"),
    [
        ('context.page.path = "/checkout/done"', TRACK_TRANSACTION, True),
        ('properties.items.1.sku = "b-2"', TRACK_TRANSACTION, True),
        ('properties.items[0].sku = "a-1"', TRACK_TRANSACTION, True),
        ("properties.items[2].sku = null", TRACK_TRANSACTION, True),
        ('properties.items.0 = "zero"', {"properties": {"items": {"0": "zero"}}}, True),  # a key on objects
        ("event.length = null", TRACK_TRANSACTION, True),  # a string has no fields
        ('traits.email = "Ada@Example.com"', IDENTIFY, True),
        ('properties.email = "Ada@Example.com"', IDENTIFY, False),  # no traits->properties quirk
        (r"properties.a\.b = 1", {"properties": {"a.b": 1, "a": {"b": 2}}}, True),
        ("properties.a.b = 2", {"properties": {"a.b": 1, "a": {"b": 2}}}, True),
        (r'traits.\$email = "x"', {"traits": {"$email": "x"}}, True),
        (r"properties.\(weird\)\ key\\ = 1", {"properties": {"(weird) key\\": 1}}, True),
        (r"properties.caf\é = 1", {"properties": {"café": 1}}, True),
        ("properties.and = 1", {"properties": {"and": 1}}, True),  # keywords are keys after a dot
        (r"\null = 1", {"null": 1}, True),
        (r"\in in [1]", {"in": 1}, True),
        ("properties.snake_case-key = 1", {"properties": {"snake_case-key": 1}}, True),
        ("_private = 1", {"_private": 1}, True),
    ],
)
def test_paths(source, event, expected):
    assert matches(source, event) is expected


# --- String literals -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ('"plain"', "plain"),
        ("'single'", "single"),
        (r'"say \"hi\""', 'say "hi"'),
        (r"'it\'s'", "it's"),
        ('"it\'s"', "it's"),
        (r'"back\\slash"', "back\\slash"),
        (r'"tab\tnew\nline\r"', "tab\tnew\nline\r"),
        (r'"caf\u00e9"', "café"),
        (r'"\ud83d\ude00"', "\U0001f600"),
        (r'"a\*b"', "a\\*b"),  # not a string escape: kept for the glob matcher
        ('"and or null"', "and or null"),
        ('""', ""),
    ],
)
def test_string_literals(literal, value):
    assert matches(f"event = {literal}", {"event": value})


@given(st.text())
def test_any_string_round_trips_through_a_literal(text):
    literal = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    assert matches(f"event = {literal}", {"event": text})


# --- Functions -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('contains(event, "Created")', True),
        ('contains(event, "created")', False),
        ('contains(event, "")', True),
        ('contains(properties.total, "1")', False),
        ('contains(properties.items, "a-1")', False),  # strings only
        ('contains("Transaction", event)', False),  # the text comes first
        ('match(event, "Transaction ?reated")', True),
        ('match(event, "Transaction")', False),
        ('match(event, "*[^x]")', True),
        ('match(properties.total, "*")', False),
        ('match(context.page.path, "/checkout/*")', True),
        ('lowercase(event) = "transaction created"', True),
        ('uppercase(event) = "TRANSACTION CREATED"', True),
        ('snakecase(lowercase(event)) = "transaction_created"', True),
        ('kebabcase(event) = "Transaction-Created"', True),
        ('titlecase("transaction created") = event', True),
        ("lowercase(properties.total) = null", True),
        ("length(event) = 19", True),
        ("length(properties.items) = 2", True),
        ("length(properties.total) = null", True),
        ("length(lowercase(event)) > 3", True),
        ('typeof(event) = "string"', True),
        ('typeof(properties.total) = "number"', True),
        ('typeof(properties.items) = "list"', True),
        ('typeof(properties) = "object"', True),
        ('typeof(anonymousId) = "null"', True),
        ('typeof(nothing.here) = "null"', True),
        ('typeof(type = "track") = "bool"', True),
        ('number("19.99") = 19.99', True),
        ("number(properties.total) = 120", True),
        ('number("12abc") = null', True),
        ("number(true) = null", True),
        ('string(properties.total) = "120"', True),
        ('string(2.0) = "2"', True),
        ('string(true) = "true"', True),
        ('string(null) = "null"', True),
        ('bool("true") and bool(1) and bool(["x"])', True),
        ('bool("false") or bool(0) or bool([]) or bool(null)', False),
    ],
)
def test_functions(source, expected):
    assert matches(source, TRACK_TRANSACTION) is expected


def test_length_counts_utf8_bytes_as_documented():
    assert matches("length(event) = 1", {"event": "a"})
    assert matches("length(event) = 3", {"event": "ア"})


def test_match_reads_a_pattern_from_the_event():
    assert matches("match(event, properties.pattern)", {"event": "abc", "properties": {"pattern": "a*"}})
    assert not matches("match(event, properties.pattern)", {"event": "abc", "properties": {"pattern": "b*"}})
    # a malformed pattern from the event is not an error: it matches nothing
    assert not matches("match(event, properties.pattern)", {"event": "[", "properties": {"pattern": "["}})


def test_match_star_spans_newlines_and_is_case_sensitive():
    assert matches('match(event, "a*z")', {"event": "a\nb\nz"})
    assert not matches('match(event, "A*")', {"event": "abc"})


# --- Syntax errors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "position", "expected", "found"),
    [
        # dangling operators
        ('type = "track" and', 18, "a value", "end of input"),
        ("type =", 6, "a value", "end of input"),
        ('type = "a" or and', 14, "a value", "'and'"),
        ('= "track"', 0, "a value", "'='"),
        ('type == "track"', 6, "a value", "'='"),
        ("!", 1, "a value", "end of input"),
        ('type = "track",', 15, "a value", "end of input"),
        # empty
        ("", 0, "a condition", "end of input"),
        ("  \n ", 4, "a condition", "end of input"),
        # unterminated strings
        ('type = "track', 13, "'\"' to close the string that starts at position 7", "end of input"),
        ("type = 'track", 13, '"\'" to close the string that starts at position 7', "end of input"),
        ('type = "tr\\"', 12, "'\"' to close the string that starts at position 7", "end of input"),
        # missing ')'
        ('(type = "track"', 15, "')'", "end of input"),
        ('(type = "a" or (event = "b")', 28, "')'", "end of input"),
        ('(type = "a" event = "b")', 12, "')'", "'event'"),
        ('type = "a")', 10, "'and', 'or' or end of input", "')'"),
        # missing operator and unknown tokens
        ('type "track"', 5, "an operator", '"track"'),
        ('type # "track"', 5, "an operator", "'#'"),
        ('type = "a" #', 11, "'and', 'or' or end of input", "'#'"),
        ("type = @", 7, "a value", "'@'"),
        ("5.", 1, "an operator", "'.'"),
        ('type = "a" && event = "b"', 11, "'and', 'or' or end of input", "'&'"),
        # functions
        ("contains(event)", 14, "',' (contains takes 2 arguments)", "')'"),
        ('lowercase(event, "x")', 15, "')' (lowercase takes 1 argument)", "','"),
        ("typeof()", 7, "a value", "')'"),
        ('match(event, "[a")', 13, "']' to close the '[' of the glob pattern", '"[a"'),
        ('match(event, "[]")', 13, "']' to close the '[' of the glob pattern", '"[]"'),
        ('match(event, "[z-a]")', 13, "']' to close the '[' of the glob pattern", '"[z-a]"'),
        ('match(event, "a\\\\")', 13, "a character after '\\' at the end of the glob pattern", '"a\\\\"'),
        # paths and strings
        ("properties. = 1", 11, "a field name after '.'", "' '"),
        ("properties.", 11, "a field name after '.'", "end of input"),
        ("properties.items[x] = 1", 17, "a list index (digits) after '['", "'x'"),
        ("properties.items[0 = 1", 18, "']'", "' '"),
        ("traits.a\\", 9, "a character after '\\'", "end of input"),
        ('event = "\\u12"', 9, "4 hexadecimal digits after '\\u'", "'\\\\u12\"'"),
        # lists
        ('type in ["a", b]', 14, "a literal (string, number, true, false or null) in the list", "'b'"),
        ('type in ["a" "b"]', 13, "',' or ']'", '"b"'),
        ('type in ["a"', 12, "',' or ']'", "end of input"),
    ],
)
def test_syntax_errors(source, position, expected, found):
    error = syntax_error(source)
    assert (error.position, error.expected, error.found) == (position, expected, found)
    assert error.source == source
    assert str(error) == f"trigger error at position {position}: expected {expected}, found {found} in: {source}"


def test_unknown_function():
    error = syntax_error('type = "track" and lower(event) = "x"')
    assert error.position == 19
    assert error.expected.startswith("a known function (bool, contains, ")
    assert "lowercase" in error.expected and "match" in error.expected
    assert error.found == "'lower'"


def test_syntax_error_reads_as_documented():
    error = syntax_error('type = "track" and')
    assert str(error) == 'trigger error at position 18: expected a value, found end of input in: type = "track" and'
    assert isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.source, copy.position, copy.expected, str(copy)) == (
        error.source,
        error.position,
        error.expected,
        str(error),
    )


def test_nesting_is_limited():
    deep = "(" * MAX_NESTING + "true" + ")" * MAX_NESTING
    assert matches(deep, {})
    assert matches("!" * MAX_NESTING + "false", {}) is (MAX_NESTING % 2 == 1)
    error = syntax_error("(" * (MAX_NESTING + 1) + "true" + ")" * (MAX_NESTING + 1))
    assert (error.position, error.expected) == (MAX_NESTING, f"at most {MAX_NESTING} levels of nesting")


def test_a_trigger_must_be_a_string():
    with pytest.raises(TypeError):
        compile_trigger(None)  # type: ignore[arg-type]


# --- explain -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "event", "sentence"),
    [
        (
            TRANSACTION_DEFAULT,
            TRACK_ORDER,
            'event = "Transaction Created" is false: event is "Order Completed"',
        ),
        (
            TRANSACTION_DEFAULT_AS_SEGMENT_WRITES_IT,
            IDENTIFY,
            'type = "track" is false: type is "identify"',
        ),
        (
            TRANSACTION_DEFAULT,
            TRACK_TRANSACTION,
            'type = "track" is true: type is "track"; '
            'event = "Transaction Created" is true: event is "Transaction Created"',
        ),
        (IDENTIFY_DEFAULT, {}, 'type = "identify" is false: type is missing'),
        (
            'type = "page" or properties.total > 100',
            TRACK_ORDER,
            "properties.total > 100 is true: properties.total is 120",
        ),
        (
            'type = "page" or properties.total > 200',
            TRACK_ORDER,
            'type = "page" is false: type is "track"; properties.total > 200 is false: properties.total is 120',
        ),
        (
            '!contains(event, "Order")',
            TRACK_ORDER,
            '!contains(event, "Order") is false because contains(event, "Order") is true: event is "Order Completed"',
        ),
        (
            'lowercase(traits.email) = "ada@example.com"',
            IDENTIFY,
            'lowercase(traits.email) = "ada@example.com" is true: traits.email is "Ada@Example.com", '
            'lowercase(traits.email) is "ada@example.com"',
        ),
        ('properties.total = "120"', TRACK_ORDER, 'properties.total = "120" is false: properties.total is 120'),
        ("anonymousId != null", TRACK_ORDER, "anonymousId != null is false: anonymousId is null"),
        ("properties.vip", TRACK_ORDER, "properties.vip is false: properties.vip is missing"),
        ("true", {}, "true is true"),
    ],
)
def test_explain(source, event, sentence):
    assert compile_trigger(source).explain(event) == sentence


def test_explain_shortens_long_values():
    explanation = compile_trigger('event = "x"').explain({"event": "y" * 500})
    assert explanation.endswith("...")
    assert len(explanation) < 150


class HostileEvent(Mapping):
    """A Mapping that fails on every read."""

    def __getitem__(self, key):
        raise RuntimeError("boom")

    def __iter__(self) -> Iterator:
        raise RuntimeError("boom")

    def __len__(self) -> int:
        raise RuntimeError("boom")


@pytest.mark.parametrize("source", [IDENTIFY_DEFAULT, TRANSACTION_DEFAULT, "properties.a.b = 1"])
def test_unreadable_events_do_not_match_and_do_not_raise(source):
    trigger = compile_trigger(source)
    assert trigger.matches(HostileEvent()) is False
    assert "could not be evaluated" in trigger.explain(HostileEvent())
    assert trigger.matches("not a mapping") is False  # type: ignore[arg-type]
    assert trigger.matches(None) is False  # type: ignore[arg-type]


# --- Properties ----------------------------------------------------------------------------------------------

KEYS = ["type", "event", "userId", "properties", "traits", "context", "total", "email", "page", "items", "0", "1"]
keys = st.sampled_from(KEYS) | st.text(max_size=6)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats()  # NaN and infinities included: JSON parsers can produce them
    | st.text(max_size=12)
    | st.sampled_from(["track", "identify", "Transaction Created", "", "a*", "[", "ア"])
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=15,
)
events = st.dictionaries(keys, json_values, max_size=8)

TRIGGERS = [
    IDENTIFY_DEFAULT,
    TRANSACTION_DEFAULT,
    TRANSACTION_DEFAULT_AS_SEGMENT_WRITES_IT,
    "properties.total > 10 and properties.total <= 1e3 or properties.total = -1",
    "properties.total < properties.items.0 or properties.items[1] >= 2.5",
    "properties = traits or properties != context",
    'properties.items = [1, "a", null, true] or properties.items = []',
    'type in ["track", "identify"] or properties.total in [1, 2.5, null, false] or 1 in properties.items',
    "properties.email in properties.items",
    "!(userId = null) and traits.email != null",
    '!contains(event, "Created") or contains(properties.email, properties.page)',
    'match(event, "Transaction *") or match(properties.email, properties.page) or match(type, "[a-z]?*")',
    "lowercase(event) = uppercase(event) or snakecase(event) = kebabcase(titlecase(event))",
    "length(properties.items) > 1 or length(event) = length(traits)",
    'typeof(properties.total) = "number" or typeof(traits) = typeof(context.page)',
    'number(properties.total) > 1 or string(properties.items) = "[]" or bool(properties.total)',
    "properties.total or traits.email or !context.page",
    r"properties.product\ 1.price = properties.\0",
    "(properties.total > 1) = (properties.total > 2)",
    "typeof(lowercase(properties.items.0.1.email)) = typeof(length(number(string(bool(event)))))",
]


COMPILED_TRIGGERS = [compile_trigger(source) for source in TRIGGERS]


@settings(max_examples=200)
@given(event=events)
def test_matches_never_raises_on_json_like_events(event):
    for trigger in COMPILED_TRIGGERS:
        assert type(trigger.matches(event)) is bool
        # White-box: the compiled closure itself must not need Trigger.matches' safety net on JSON data.
        assert type(trigger._fn(event)) is bool
        explanation = trigger.explain(event)
        assert isinstance(explanation, str) and "could not be evaluated" not in explanation


OPERANDS = [
    "type",
    "event",
    "userId",
    "properties.total",
    "properties.items",
    "properties.items.0",
    "traits",
    "context.page",
    '"track"',
    '"Transaction Created"',
    "''",
    "0",
    "1.0",
    "-2.5",
    "true",
    "false",
    "null",
    "[]",
    '[1, "a", null]',
    "lowercase(event)",
    "length(properties.items)",
    "typeof(properties.total)",
]


@settings(max_examples=200)
@given(event=events, left=st.sampled_from(OPERANDS), right=st.sampled_from(OPERANDS))
def test_not_equal_is_the_negation_of_equal(event, left, right):
    negated = compile_trigger(f"!({left} = {right})").matches(event)
    assert negated is compile_trigger(f"{left} != {right}").matches(event)
    assert negated is not compile_trigger(f"{left} = {right}").matches(event)


finite_numbers = st.integers(min_value=-(10**12), max_value=10**12) | st.floats(allow_nan=False, allow_infinity=False)


@given(a=finite_numbers, b=finite_numbers)
def test_numbers_compare_numerically(a, b):
    event = {"properties": {"a": a, "b": b}}
    for op, expected in [("<", a < b), ("<=", a <= b), (">", a > b), (">=", a >= b), ("=", a == b)]:
        assert matches(f"properties.a {op} properties.b", event) is expected
        assert matches(f"properties.a {op} {b!r}", event) is expected


@given(key=st.text(min_size=1))
def test_any_key_can_be_escaped(key):
    plain = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
    escaped = "".join(c if c in plain else "\\" + c for c in key)
    assert matches(f"properties.{escaped} = 1", {"properties": {key: 1}})
    assert not matches(f"properties.{escaped} = 1", {"properties": {key + "x": 1}})


FRAGMENTS = [
    "type", "event", "properties.total", "traits.email", "context.page.path", ".", "\\", " ", "=", "!=", "<",
    "<=", ">", ">=", "!", "and", "or", "in", ",", "(", ")", "[", "]", '"', "'", '"track"', "'x'", "1", "-2.5",
    "1e3", "true", "false", "null", "contains(", "match(", "lowercase(", "length(", "typeof(", "foo(",
    '"a*"', "#", "\\u00e9", "0",
]  # fmt: skip


@settings(max_examples=500)
@given(st.text() | st.lists(st.sampled_from(FRAGMENTS), max_size=12).map("".join))
def test_compile_returns_a_trigger_or_raises_a_syntax_error(source):
    try:
        trigger = compile_trigger(source)
    except TriggerSyntaxError as error:
        assert 0 <= error.position <= len(source)
        assert error.source == source and error.expected
        assert str(error).startswith(f"trigger error at position {error.position}: expected ")
    else:
        assert trigger.source == source
        assert type(trigger.matches(TRACK_TRANSACTION)) is bool
        assert type(trigger._fn({})) is bool
        assert isinstance(trigger.explain(TRACK_TRANSACTION), str)


def test_nan_is_not_equal_to_itself():
    event = {"properties": {"x": math.nan}}
    assert not matches("properties.x = properties.x", event)
    assert not matches("properties.x < 1", event)


# --- the glob matcher: the regex translation's meaning, without its backtracking -------------------------

GLOB_PATTERNS = st.lists(st.sampled_from(["a", "b", "*", "?", "[ab]", "[^a]", "[a-b]", "\\*", "\\?", "**", "\n"]),
                         max_size=8).map("".join)
GLOB_TEXTS = st.text(alphabet="ab*?\n", max_size=12)


@settings(max_examples=600, deadline=None)
@given(GLOB_PATTERNS, GLOB_TEXTS)
def test_the_glob_matcher_agrees_with_the_regex_translation(pattern, text):
    regex, _ = _glob_regex(pattern)
    assert regex is not None
    assert _glob(pattern).matches(text) is (regex.fullmatch(text) is not None), (pattern, text)
    assert matches(f"match(event, {json.dumps(pattern)})", {"event": text}) is (regex.fullmatch(text) is not None)


def test_many_stars_do_not_backtrack():
    # A regex .*a.*a.*a.*b took seconds on 600 characters; this is the matcher's answer, not its time.
    text = "a" * 20_000
    assert not matches('match(event, "*a*a*a*a*a*a*a*b")', {"event": text})
    assert matches('match(event, "*a*a*a*a*a*a*a*")', {"event": text})
    assert not matches("match(event, properties.p)", {"event": text, "properties": {"p": "*a" * 20 + "*b"}})


def test_a_pattern_from_the_event_longer_than_the_limit_never_matches():
    text = "a" * (MAX_EVENT_GLOB + 1)
    longest, too_long = "a" * (MAX_EVENT_GLOB - 1) + "*", "a" * MAX_EVENT_GLOB + "*"
    assert matches("match(event, properties.p)", {"event": text, "properties": {"p": longest}})
    assert not matches("match(event, properties.p)", {"event": text, "properties": {"p": too_long}})
    assert matches(f'match(event, "{too_long}")', {"event": text})   # a literal pattern is the operator's: no limit


def test_the_routers_test_given_is_public_and_drops_what_the_router_checked():
    trigger = compile_trigger('type = "track" and event = "Order Completed" and properties.total > 10')
    rest = trigger.test_given({"type": "track", "event": "Order Completed"})
    assert rest is not None and rest({"properties": {"total": 11}}) is True   # only the total is left to test
    assert rest({"properties": {"total": 9}}) is False
    assert compile_trigger('type = "track" or type = "identify"').test_given({"type": "identify"}) is None
    never = compile_trigger('type = "track" and event = "A"').test_given({"type": "track", "event": "B"})
    assert never is not None and never({"type": "track", "event": "A"}) is False
    assert not hasattr(Trigger, "_test_given")


def test_the_package_surface_is_small():
    import segment_qualtrics.segment.fql as fql

    assert sorted(fql.__all__) == ["MAX_EVENT_GLOB", "MAX_NESTING", "Trigger", "TriggerSyntaxError", "compile_trigger"]
