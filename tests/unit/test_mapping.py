"""Tests for segment_qualtrics.segment.mapping_kit (Segment mapping-kit directives).

Most expectations are copied from mapping-kit's own tests in segmentio/action-destinations:
packages/core/src/mapping-kit/__tests__/index.test.ts, schema-fixtures/directives/*.json,
schema-fixtures/invalid|valid/*.json, __tests__/flatten.test.ts and packages/core/src/__tests__/get.iso.test.ts.
"""

from __future__ import annotations

import copy
import json
import pickle
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from segment_qualtrics.segment.mapping_kit import (
    MAX_MERGED_STRING_CHARS,
    MAX_TEXT_CHARS,
    UNDEFINED,
    MappingError,
    compile_path,
    resolve_mapping,
    resolve_value,
    validate_mapping,
)
from segment_qualtrics.segment.mapping_kit.js import js_json, js_number


def transform(mapping: Any, data: Any) -> Any:
    """mapping-kit's transform(): validate, then resolve one value and drop undefined."""
    validate_mapping({"field": mapping})
    return resolve_value(mapping, data)


def problems_of(mapping: Any, **kwargs: Any) -> list[str]:
    with pytest.raises(MappingError) as caught:
        validate_mapping(mapping, **kwargs)
    return caught.value.problems


# --------------------------------------------------------------------------------------------------
# Qualtrics default mappings (as Segment's Qualtrics destination defines them)
# --------------------------------------------------------------------------------------------------

EMAIL = {"@if": {"exists": {"@path": "$.email"}, "then": {"@path": "$.email"}, "else": {"@path": "$.traits.email"}}}
LANGUAGE = {"@if": {"exists": {"@path": "$.traits.language"}, "then": {"@path": "$.traits.language"}, "else": "EN"}}
EXT_REF_UPSERT = {
    "@if": {"exists": {"@path": "$.userId"}, "then": {"@path": "$.userId"}, "else": {"@path": "$.anonymousId"}}
}
ADD_CONTACT_DEFAULTS = {
    "extRef": {"@path": "$.userId"},
    "email": EMAIL,
    "phone": {"@path": "$.traits.phone"},
    "firstName": {"@path": "$.traits.firstName"},
    "lastName": {"@path": "$.traits.lastName"},
    "language": LANGUAGE,
    "unsubscribed": False,
}
UPSERT_DEFAULTS = {
    "mailingListId": {"@path": "$.traits.qualtricsMailingListId"},
    "contactId": {"@path": "$.traits.qualtricsContactId"},
    "extRef": EXT_REF_UPSERT,
    "email": EMAIL,
    "phone": {"@path": "$.traits.phone"},
    "firstName": {"@path": "$.traits.firstName"},
    "lastName": {"@path": "$.traits.lastName"},
    "language": LANGUAGE,
    "unsubscribed": False,
    "transactionDate": {"@path": "$.timestamp"},
}
EVENT_PAYLOAD_DEFAULT = {
    "eventPayload": {
        "event": {"@path": "$.event"},
        "type": {"@path": "$.type"},
        "userId": {"@path": "$.userId"},
        "properties": {"@path": "$.properties"},
        "traits": {"@path": "$.traits"},
        "context": {"@path": "$.context"},
    }
}

IDENTIFY = {
    "type": "identify",
    "messageId": "m-1",
    "userId": "user-1",
    "anonymousId": None,
    "timestamp": "2024-05-01T10:00:00.000Z",
    "traits": {"email": "ada@example.com", "firstName": "Ada", "lastName": "Lovelace", "phone": "+4412345"},
    "context": {"ip": "1.2.3.4"},
    "integrations": {},
}


@pytest.mark.parametrize("defaults", [ADD_CONTACT_DEFAULTS, UPSERT_DEFAULTS, EVENT_PAYLOAD_DEFAULT])
def test_default_mappings_are_valid(defaults: dict[str, Any]) -> None:
    validate_mapping(defaults)


def test_add_contact_defaults_on_identify() -> None:
    assert resolve_mapping(ADD_CONTACT_DEFAULTS, IDENTIFY) == {
        "extRef": "user-1",
        "email": "ada@example.com",
        "phone": "+4412345",
        "firstName": "Ada",
        "lastName": "Lovelace",
        "language": "EN",
        "unsubscribed": False,
    }


def test_email_prefers_top_level_email() -> None:
    event = {**IDENTIFY, "email": "top@example.com"}
    assert resolve_value(EMAIL, event) == "top@example.com"


def test_email_falls_back_when_top_level_email_is_null() -> None:
    # exists is false for null, so the else branch (traits.email) is used
    assert resolve_value(EMAIL, {**IDENTIFY, "email": None}) == "ada@example.com"


def test_email_absent_when_neither_exists() -> None:
    event = {"type": "identify", "userId": "u", "traits": {}}
    assert resolve_value(EMAIL, event) is UNDEFINED
    assert "email" not in resolve_mapping({"email": EMAIL}, event)


def test_language_uses_trait_when_present_and_en_otherwise() -> None:
    assert resolve_value(LANGUAGE, {"traits": {"language": "FR"}}) == "FR"
    assert resolve_value(LANGUAGE, {"traits": {"language": None}}) == "EN"
    assert resolve_value(LANGUAGE, {"traits": {}}) == "EN"
    assert resolve_value(LANGUAGE, {}) == "EN"


def test_upsert_defaults_on_track_fall_back_to_anonymous_id() -> None:
    event = {
        "type": "track",
        "event": "Transaction Created",
        "userId": None,
        "anonymousId": "anon-7",
        "timestamp": "2024-05-01T10:00:00Z",
        "traits": {"qualtricsMailingListId": "CG_1"},
        "properties": {"total": 3},
    }
    assert resolve_mapping(UPSERT_DEFAULTS, event) == {
        "mailingListId": "CG_1",
        "extRef": "anon-7",
        "language": "EN",
        "unsubscribed": False,
        "transactionDate": "2024-05-01T10:00:00Z",
    }


def test_event_payload_default_keeps_nested_values_and_drops_missing_ones() -> None:
    event = {"type": "track", "event": "Clicked", "userId": None, "properties": {"a": [1, {"b": None}]}}
    assert resolve_mapping(EVENT_PAYLOAD_DEFAULT, event) == {
        "eventPayload": {"event": "Clicked", "type": "track", "userId": None, "properties": {"a": [1, {"b": None}]}}
    }


def test_resolved_values_do_not_share_structure_with_the_event() -> None:
    event = {"type": "track", "properties": {"nested": {"x": [1, 2]}}}
    result = resolve_mapping({"props": {"@path": "$.properties"}}, event)
    result["props"]["nested"]["x"].append(3)
    assert event["properties"]["nested"]["x"] == [1, 2]


# --------------------------------------------------------------------------------------------------
# resolve_mapping / resolve_value basics (index.test.ts "no-op", "remove undefined values")
# --------------------------------------------------------------------------------------------------


def test_empty_and_pass_through_mappings() -> None:
    assert resolve_mapping({}, {"cool": False}) == {}
    assert resolve_mapping({"cool": True}, {}) == {"cool": True}


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [
        ({"x": None}, {"x": None}),
        ({"x": "hi"}, {"x": "hi"}),
        ({"x": 1}, {"x": 1}),
        ({"x": {}}, {"x": {}}),
        ({"x": {"@path": "$.nope"}, "y": 1, "z": "hi"}, {"y": 1, "z": "hi"}),
        ({"x": {"y": {"@path": "$.nope"}, "z": 1}, "foo": 1}, {"x": {"z": 1}, "foo": 1}),
        ({"x": {"y": {"z": {"@path": "$.nope"}}}, "foo": 1}, {"x": {"y": {}}, "foo": 1}),
    ],
)
def test_undefined_values_are_removed_and_null_kept(mapping: dict[str, Any], expected: dict[str, Any]) -> None:
    assert resolve_mapping(mapping, {}) == expected


def test_undefined_items_in_arrays_become_null_like_json_stringify() -> None:
    mapping = {"ids": [{"@path": "$.a"}, {"@path": "$.missing"}, "lit"]}
    assert resolve_mapping(mapping, {"a": 1}) == {"ids": [1, None, "lit"]}


def test_arrays_and_nested_objects_of_directives() -> None:
    mapping = {
        "contact": {
            "name": {"@template": "{{traits.firstName}} {{traits.lastName}}"},
            "tags": [{"@path": "$.traits.tag"}, {"@case": {"operator": "upper", "value": {"@path": "$.traits.tag"}}}],
            "meta": {"source": "segment", "id": {"@path": "$.messageId"}},
        }
    }
    event = {"messageId": "m1", "traits": {"firstName": "Ada", "lastName": "L", "tag": "vip"}}
    validate_mapping(mapping)
    assert resolve_mapping(mapping, event) == {
        "contact": {"name": "Ada L", "tags": ["vip", "VIP"], "meta": {"source": "segment", "id": "m1"}}
    }


def test_whole_event_with_dollar_dot() -> None:
    event = {"type": "identify", "userId": "u1"}
    assert resolve_mapping({"data": {"@path": "$."}}, event) == {"data": event}
    assert resolve_mapping({"data": {"@path": "$."}}, event)["data"] is not event


def test_resolve_value_may_return_undefined_and_repr() -> None:
    assert resolve_value({"@path": "$.x"}, {}) is UNDEFINED
    assert repr(UNDEFINED) == "UNDEFINED"
    assert not UNDEFINED
    assert copy.deepcopy(UNDEFINED) is UNDEFINED
    assert pickle.loads(pickle.dumps(UNDEFINED)) is UNDEFINED


def test_directive_metadata_key_is_ignored() -> None:
    mapping = {"f": {"@path": "$..", "_metadata": {"type": "variable"}}}
    validate_mapping(mapping)
    assert resolve_mapping(mapping, {"foo": "bar"}) == {"f": {"foo": "bar"}}


# --------------------------------------------------------------------------------------------------
# @path (schema-fixtures/directives/@path.json, index.test.ts, get.iso.test.ts)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mapping", "data", "expected"),
    [
        ({"neat": {"@path": "$.foo"}}, {"foo": "bar"}, {"neat": "bar"}),
        ({"@path": ""}, {"foo": "bar"}, {"foo": "bar"}),
        ({"@path": "$."}, {"foo": "bar"}, {"foo": "bar"}),
        ({"@path": "$.."}, {"foo": "bar"}, {"foo": "bar"}),
        ({"neat": {"@path": "$.foo.bar[0].baz"}}, {"foo": {"bar": [{"baz": "qux"}]}}, {"neat": "qux"}),
        ({"neat": {"@path": "$.foo.bar"}}, {"foo": {"bar": "baz"}}, {"neat": "baz"}),
        ({"@path": {"@path": "$.foo"}}, {"foo": "bar", "bar": "baz"}, "baz"),
        ({"neat": {"@path": "$.oops"}}, {"foo": "bar"}, {}),
        (
            {"neat": {"@path": "$.integrations.Actions Amplitude.session_id"}},
            {"integrations": {"Actions Amplitude": {"session_id": "bar"}}},
            {"neat": "bar"},
        ),
        (
            {"neat": {"@path": "$.integrations['Actions Amplitude'].session_id"}},
            {"integrations": {"Actions Amplitude": {"session_id": "bar"}}},
            {"neat": "bar"},
        ),
        ({"neat": {"@path": "$.foo.bar.baz"}}, {"foo": "bar"}, {}),
        ({"neat": {"@path": "$.foo"}}, {"foo": None}, {"neat": None}),
        (
            {"neat": {"@path": "$.foo"}, "sweet": {"@path": "$.bar"}},
            {"foo": None, "bar": "baz"},
            {"neat": None, "sweet": "baz"},
        ),
        ({"@path": "$.event"}, {"event": {"foo": "bar"}}, {"foo": "bar"}),
        ({"neat": {"@path": "$.foo.bar."}}, {"foo": "bar"}, {}),
        ({"neat": {"@path": "foo"}}, {"foo": "no dollar"}, {"neat": "no dollar"}),
    ],
)
def test_path_fixtures(mapping: Any, data: Any, expected: Any) -> None:
    assert transform(mapping, data) == expected


def test_path_with_template_braces_resolves_to_nothing_but_fails_validation() -> None:
    assert resolve_value({"neat": {"@path": "$.{{foo}}"}}, {"foo": "bar"}) == {}
    assert problems_of({"neat": {"@path": "$.{{foo}}"}}) == [
        'neat.@path: bad path "$.{{foo}}": template placeholders do not work in a path; use @template'
    ]


GET_OBJ = {
    "a": {"b": {"c": 42, "d": True, "e": "hello", "f": [{"g": "yay"}, {"g": "nay"}]}, "h": None},
    "[txt] non": True,
    "[txt] nest": {"inner": True},
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("", GET_OBJ),
        ("a", GET_OBJ["a"]),
        ("a.b", GET_OBJ["a"]["b"]),
        ("['a'].b", GET_OBJ["a"]["b"]),
        ('["a"].b', GET_OBJ["a"]["b"]),
        ("a.b.c", 42),
        ("a.b.d", True),
        ("a.b.e", "hello"),
        ("a.b.f[0]", {"g": "yay"}),
        ("a.b.f[0].g", "yay"),
        ("a.b.f.1.g", "nay"),
        ("a.h", None),
        ("a.b.x", UNDEFINED),
        ("[txt] non", True),
        ("[txt] nest.inner", True),
    ],
)
def test_get_fixtures(path: str, expected: Any) -> None:
    assert resolve_value({"@path": path}, GET_OBJ) == expected


@pytest.mark.parametrize(
    ("path", "keys"),
    [
        ("$.", ()),
        ("", ()),
        ("$..", ()),
        ("$.a.b", ("a", "b")),
        ("$.a[0].b", ("a", "0", "b")),
        ("$.a['b c'][12]", ("a", "b c", "12")),
        ('$.a["x"]', ("a", "x")),
        ("$.[txt] non", ("[txt] non",)),
        ("a.b.", ("a", "b")),
    ],
)
def test_compile_path(path: str, keys: tuple[str, ...]) -> None:
    assert compile_path(path) == keys


def test_array_and_string_members_follow_javascript() -> None:
    data = {"list": [10, 20], "text": "abc"}
    assert resolve_value({"@path": "$.list.length"}, data) == 2
    assert resolve_value({"@path": "$.list[1]"}, data) == 20
    assert resolve_value({"@path": "$.list[2]"}, data) is UNDEFINED
    assert resolve_value({"@path": "$.list.01"}, data) is UNDEFINED  # not a canonical index
    assert resolve_value({"@path": "$.text[1]"}, data) == "b"
    assert resolve_value({"@path": "$.text.length"}, data) == 3
    assert resolve_value({"@path": "$.list.0.x"}, data) is UNDEFINED


@pytest.mark.parametrize("falsy", [None, 0, "", False])
def test_path_through_a_falsy_value_returns_that_value(falsy: Any) -> None:
    # get.ts reduces with `prev && prev[key]`
    assert resolve_value({"@path": "$.traits.email"}, {"traits": falsy}) == falsy


def test_path_through_a_truthy_scalar_is_undefined() -> None:
    assert resolve_value({"@path": "$.traits.email"}, {"traits": 5}) is UNDEFINED
    assert resolve_value({"@path": "$.traits.email"}, {"traits": True}) is UNDEFINED


def test_path_argument_resolving_to_a_non_string_is_an_error() -> None:
    with pytest.raises(MappingError) as caught:
        resolve_mapping({"f": {"@path": {"@path": "$.missing"}}}, {})
    assert caught.value.problems == ["f: @path: expected string, got undefined"]


@given(st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_ ]{0,8}", fullmatch=True), st.integers(), min_size=1))
def test_path_lookup_matches_plain_indexing(data: dict[str, int]) -> None:
    for key, value in data.items():
        assert resolve_value({"@path": f"$.{key}"}, {"outer": data} | data) == value
        assert resolve_value({"@path": f"$.outer['{key}']"}, {"outer": data}) == value


# --------------------------------------------------------------------------------------------------
# @if (schema-fixtures/directives/@if.json, index.test.ts, README)
# --------------------------------------------------------------------------------------------------

IF_DATA = {"a": 1, "b": True, "c": False, "d": None, "e": ""}


@pytest.mark.parametrize(
    ("condition", "path", "expected"),
    [
        ("exists", "$.a", 1),
        ("exists", "$.d", 2),
        ("exists", "$.x", 2),
        ("exists", "$.e", 1),
        ("exists", "$.c", 1),
        ("blank", "$.a", 1),
        ("blank", "$.d", 2),
        ("blank", "$.x", 2),
        ("blank", "$.e", 2),
        ("blank", "$.c", 2),  # false == '' in JavaScript
    ],
)
def test_if_fixtures(condition: str, path: str, expected: int) -> None:
    assert transform({"@if": {condition: {"@path": path}, "then": 1, "else": 2}}, IF_DATA) == expected


@pytest.mark.parametrize(
    ("value", "is_blank"),
    [(0, True), ([], True), ([None], True), ([""], True), ("0", False), ([0], False), ({}, False), (" ", False)],
)
def test_if_blank_uses_javascript_loose_equality(value: Any, is_blank: bool) -> None:
    mapping = {"@if": {"blank": {"@path": "$.v"}, "then": "present", "else": "blank"}}
    assert resolve_value(mapping, {"v": value}) == ("blank" if is_blank else "present")


def test_if_missing_branch_resolves_to_nothing() -> None:
    then_only = {"foo-exists": {"@if": {"exists": {"@path": "$.foo"}, "then": True}}}
    assert resolve_mapping(then_only, {"a": "cool"}) == {}
    else_only = {"f": {"@if": {"exists": 1, "else": 3}}}  # valid/@if-partial.json
    validate_mapping(else_only)
    assert resolve_mapping(else_only, {}) == {}


def test_if_falsy_else_is_ignored_as_in_mapping_kit_and_literal_works_around_it() -> None:
    assert resolve_value({"@if": {"exists": {"@path": "$.x"}, "then": 1, "else": False}}, {}) is UNDEFINED
    assert resolve_value({"@if": {"exists": {"@path": "$.x"}, "then": 1, "else": {"@literal": False}}}, {}) is False
    assert resolve_value({"@if": {"exists": {"@path": "$.a"}, "then": False}}, {"a": 1}) is False


def test_if_nested_directives() -> None:
    mapping = {"@if": {"exists": {"@path": "$.foo"}, "then": {"@path": "$.bar"}, "else": {"@path": "$.baz"}}}
    assert transform(mapping, {"foo": 1, "bar": "B", "baz": "Z"}) == "B"
    assert transform(mapping, {"bar": "B", "baz": "Z"}) == "Z"


def test_if_without_condition_is_a_runtime_error_too() -> None:
    with pytest.raises(MappingError, match='@if requires an "exists" key or a "blank" key'):
        resolve_value({"@if": {"exists": None, "then": 1}}, {})


# --------------------------------------------------------------------------------------------------
# @case (schema-fixtures/directives/@case.json)
# --------------------------------------------------------------------------------------------------

CASE_DATA = {
    "a": 1,
    "b": "MAKE ME LOWER CASE",
    "c": "make me upper case",
    "d": None,
    "e": "",
    "f": False,
    "g": "mIXeD StRinG CasING W/ NuMBErs 190wdB",
    "h": {"key1": "with values", "key2": ["hi", True, None]},
}


@pytest.mark.parametrize(
    ("operator", "path", "expected"),
    [
        ("lower", "$.b", "make me lower case"),
        ("upper", "$.c", "MAKE ME UPPER CASE"),
        ("lower", "$.e", ""),
        ("lower", "$.g", "mixed string casing w/ numbers 190wdb"),
        ("upper", "$.g", "MIXED STRING CASING W/ NUMBERS 190WDB"),
        ("lower", "$.a", 1),
        ("lower", "$.d", None),
        ("lower", "$.f", False),
        ("lower", "$.h", {"key1": "with values", "key2": ["hi", True, None]}),
    ],
)
def test_case_fixtures(operator: str, path: str, expected: Any) -> None:
    assert transform({"@case": {"operator": operator, "value": {"@path": path}}}, CASE_DATA) == expected


def test_case_missing_path_is_absent() -> None:
    assert transform({"neat": {"@case": {"operator": "lower", "value": {"@path": "$.nope"}}}}, CASE_DATA) == {}


def test_case_runtime_errors_match_mapping_kit() -> None:
    with pytest.raises(MappingError, match='@case requires a "operator" key'):
        resolve_value({"@case": {"wrongKey": "lower", "value": {"@path": "$.b"}}}, CASE_DATA)
    with pytest.raises(MappingError, match='operator key should have a value of "lower" or "upper"'):
        resolve_value({"@case": {"operator": "unsupported snake", "value": {"@path": "$.b"}}}, CASE_DATA)


# --------------------------------------------------------------------------------------------------
# @replace (schema-fixtures/directives/@replace.json, index.test.ts)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "value", "expected"),
    [
        ({"pattern": "_", "replacement": "rrrrr"}, "", ""),
        ({"pattern": "_", "replacement": "rrrrr"}, None, ""),
        ({"pattern": "WW", "replacement": "oo", "ignorecase": False}, "cWWl-story-ww", "cool-story-ww"),
        ({"pattern": "AaB", "replacement": "nice", "ignorecase": True}, "aab-----AaB---aab", "nice-----nice---nice"),
        ({"pattern": "_", "replacement": "", "ignorecase": False}, "nomore_underscore", "nomoreunderscore"),
        ({"pattern": "_", "replacement": "weird"}, "nomore_underscore", "nomoreweirdunderscore"),
        ({"pattern": "LOL", "replacement": "YAY"}, "Well Hello there LOL", "Well Hello there YAY"),
        ({"pattern": "+", "replacement": "_", "global": True}, "many+different+things", "many_different_things"),
        ({"pattern": "+", "replacement": "_", "global": False}, "many+different+things", "many_different+things"),
        ({"pattern": "aaabbbcccd", "replacement": ""}, "aaabbbcccd", ""),
        ({"pattern": "many+"}, "many+different+things", "different+things"),
        ({"pattern": "true", "replacement": "granted"}, True, "granted"),
        ({"pattern": "1", "replacement": "granted"}, 1, "granted"),
        (
            {"pattern": "-", "replacement": " ", "pattern2": "great", "replacement2": "awesome"},
            "something-great!",
            "something awesome!",
        ),
        (
            {"pattern": "true", "replacement": "granted", "pattern2": "false", "replacement2": "denied"},
            False,
            "denied",
        ),
        ({"pattern": "_", "replacement": "rrrrr"}, "abcdefgh", "abcdefgh"),
        ({"pattern": "_", "replacement": "+", "pattern2": "", "replacement2": ""}, "abc_defgh", "abc+defgh"),
        (
            {
                "global": True,
                "ignorecase": False,
                "pattern": '"',
                "pattern2": "\\",
                "replacement": "",
                "replacement2": "",
            },
            'abc"def\\gh',
            "abcdefgh",
        ),
        ({"pattern": ".", "replacement": "!"}, "a.b.c", "a!b!c"),  # patterns are literal, never regex
        ({"pattern": "1.5", "replacement": "x"}, 1.5, "x"),
    ],
)
def test_replace_fixtures(options: dict[str, Any], value: Any, expected: str) -> None:
    mapping = {"@replace": {**options, "value": {"@path": "$.a"}}}
    assert transform(mapping, {"a": value}) == expected


def test_replace_missing_value_gives_empty_string() -> None:
    mapping = {
        "neat": {
            "@replace": {
                "pattern": "_",
                "replacement": "+",
                "pattern2": "+",
                "replacement2": "r",
                "value": {"@path": "$.a"},
            }
        }
    }
    assert transform(mapping, {"b": "abc_defgh"}) == {"neat": ""}


@pytest.mark.parametrize(
    ("replacement", "expected"),
    [("[$&]", "a[-]b"), ("$$", "a$b"), ("$`", "aab"), ("$'", "abb"), ("$1", "a$1b"), ("$", "a$b")],
)
def test_replace_uses_javascript_replacement_patterns(replacement: str, expected: str) -> None:
    assert resolve_value({"@replace": {"pattern": "-", "replacement": replacement, "value": "a-b"}}, {}) == expected


# --------------------------------------------------------------------------------------------------
# @arrayPath (schema-fixtures/directives/@arrayPath.json, index.test.ts)
# --------------------------------------------------------------------------------------------------

PRODUCTS = [{"productId": "123", "price": 0.5}, {"productId": "456", "price": 0.99}]
SHAPE = {"product_id": {"@path": "$.productId"}, "monies": {"@path": "$.price"}}
SHAPED = [{"product_id": "123", "monies": 0.5}, {"product_id": "456", "monies": 0.99}]


@pytest.mark.parametrize(
    ("mapping", "data", "expected"),
    [
        ({"neat": {"@arrayPath": ["$.products"]}}, {"products": PRODUCTS}, {"neat": PRODUCTS}),
        ({"neat": {"@arrayPath": ["$.products", SHAPE]}}, {"products": PRODUCTS}, {"neat": SHAPED}),
        (
            {
                "neat": {
                    "@arrayPath": [
                        {"@if": {"exists": {"@path": "$.products"}, "then": {"@path": "$.products"}, "else": []}},
                        SHAPE,
                    ]
                }
            },
            {"products": PRODUCTS},
            {"neat": SHAPED},
        ),
        ({"neat": {"@arrayPath": ["$.products", SHAPE]}}, {"products": {"notAnArray": True}}, {"neat": [{}]}),
        (
            {"neat": {"@arrayPath": ["$.properties", SHAPE]}},
            {"properties": {"productId": "123", "price": 0.5}},
            {"neat": [{"product_id": "123", "monies": 0.5}]},
        ),
        (
            {"products": {"@arrayPath": [{"@path": "$.properties.products"}, None]}},
            {"properties": {"products": PRODUCTS}},
            {"products": PRODUCTS},
        ),
        (
            {"neat": {"@arrayPath": ["$.properties", {"id": "static"}]}},
            {"properties": {"productId": "123", "price": 0.5}},
            {"neat": [{"id": "static"}]},
        ),
        (
            {"neat": {"@arrayPath": ["$.properties", {}]}},
            {"properties": {"productId": "123", "price": 0.5}},
            {"neat": {"productId": "123", "price": 0.5}},
        ),
        ({"neat": {"@arrayPath": ["$.products_does_not_exist", SHAPE]}}, {"products": PRODUCTS}, {}),
        ({"neat": {"@arrayPath": ["$.products", SHAPE, {"foo": "bar"}]}}, {"products": PRODUCTS}, {"neat": SHAPED}),
        (
            {"ids": {"@arrayPath": ["$.products", {"@path": "$.productId"}]}},
            {"products": PRODUCTS},
            {"ids": ["123", "456"]},
        ),
    ],
)
def test_array_path_fixtures(mapping: Any, data: Any, expected: Any) -> None:
    assert transform(mapping, data) == expected


# --------------------------------------------------------------------------------------------------
# @template (schema-fixtures/directives/@template.json, placeholders.ts)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "data", "expected"),
    [
        ("Hello, {{name}}!", {"name": "World"}, "Hello, World!"),
        ("Hello, {{user.name}}!", {"user": {"name": "Alice"}}, "Hello, Alice!"),
        ("<blink>{{a}} {{{a}}}</blink>", {"a": "<b>Hi</b>"}, "<blink><b>Hi</b> <b>Hi</b></blink>"),
        ("Hello, {{name}}!", {}, "Hello, !"),
        ("{{oops.yo}}", {}, ""),
        ("{{foo}}", {"foo": True}, "true"),
        ("{{foo}}", {"foo": 1}, "1"),
        ("{{foo}}", {"foo": 1.0}, "1"),
        ("{{foo}}", {"foo": {"bar": "baz"}}, "[object Object]"),
        ("{{foo}}", {"foo": [1, None, "x"]}, "1,,x"),
        ("{{foo}}", {"foo": None}, ""),
        ("{{foo}}}", {"foo": "hello"}, "hello}"),
        ("Hello world", {}, "Hello world"),
        ("Hello, {{foo}} {{bar}}!", {"foo": "Mr.", "bar": "Bean"}, "Hello, Mr. Bean!"),
        ('Hello, "{{name}}"!', {"name": "World"}, 'Hello, "World"!'),
        ("{{[unknown]}}", {"unknown": "x"}, ""),
        (
            "{{ traits.name }} ({{userId}})",
            {"traits": {"name": "Mr. Rogers"}, "userId": "abc123"},
            "Mr. Rogers (abc123)",
        ),
        ("{{items[1]}}", {"items": ["a", "b"]}, "b"),
    ],
)
def test_template_fixtures(template: str, data: Any, expected: str) -> None:
    assert transform({"@template": template}, data) == expected


def test_template_never_fills_in_the_text_it_inserted() -> None:
    # placeholders.ts runs a {{{a}}} pass then a {{a}} pass over its result, so event text was filled in
    # again: an event could make its own text expand. Here one pass: inserted text stays as it came.
    assert resolve_value({"@template": "{{{a}}}"}, {"a": "{{b}}", "b": "x"}) == "{{b}}"
    assert resolve_value({"@template": "{{a}}"}, {"a": "{{b}}", "b": "x"}) == "{{b}}"
    assert resolve_value({"@template": "{{{a}}} {{b}}"}, {"a": "{{", "b": "x"}) == "{{ x"


def test_an_event_cannot_make_a_template_expand() -> None:
    # The review's shape: 186 KiB of event rendered to 100 MB (about 950 MB at the ingest's 256 KiB limit).
    event = {"properties": {"note": "{{properties.pad}}" * 10_000, "pad": "x" * 10_000}}
    assert resolve_value({"@template": "Note: {{{properties.note}}}"}, event) == "Note: " + event["properties"]["note"]


def test_a_template_longer_than_the_cap_is_an_invalid_payload() -> None:
    event = {"a": "x" * 100_000}
    assert len(resolve_value({"@template": "{{a}}{{a}}"}, event)) == 200_000
    with pytest.raises(MappingError) as caught:
        resolve_mapping({"note": {"@template": "{{a}}" * 1000}}, event)   # 100 MB
    assert caught.value.problems == [f"note: @template: the rendered text would be longer than {MAX_TEXT_CHARS} "
                                     "characters"]


def test_the_text_cap_is_the_ingests_event_limit() -> None:
    from segment_qualtrics.ingest.core import MAX_EVENT_BYTES

    assert MAX_TEXT_CHARS == MAX_EVENT_BYTES


def test_replace_with_the_text_around_each_match_is_capped() -> None:
    # "$`" and "$'" insert the text before and after each match: quadratic in the value's length.
    mapping = {"@replace": {"pattern": "a", "replacement": "$`$'", "value": {"@path": "$.v"}}}
    assert resolve_value(mapping, {"v": "aaa"}) == "aaaaaa"
    with pytest.raises(MappingError) as caught:
        resolve_value(mapping, {"v": "a" * 100_000})   # 10 billion characters
    assert caught.value.problems == [f"@replace: the result would be longer than {MAX_TEXT_CHARS} characters"]


def test_flatten_keys_are_capped() -> None:
    # Every key repeats its parents' keys: one 100,000-character key over 10,000 members is a billion.
    event = {"v": {"k" * 100_000: {str(i): 1 for i in range(10_000)}}}
    with pytest.raises(MappingError) as caught:
        resolve_value({"@flatten": {"separator": ".", "value": {"@path": "$.v"}}}, event)
    assert caught.value.problems == [f"@flatten: the keys would be longer than {MAX_TEXT_CHARS} characters"]
    assert resolve_value({"@flatten": {"separator": ".", "value": {"@path": "$.v"}}},
                         {"v": {"a": {"b": 1, "c": [2]}}}) == {"a.b": 1, "a.c.0": 2}


def test_merging_a_long_string_is_refused() -> None:
    mapping = {"@merge": {"direction": "right", "objects": [{"@path": "$.s"}]}}
    assert resolve_value(mapping, {"s": "ab"}) == {"0": "a", "1": "b"}
    with pytest.raises(MappingError) as caught:
        resolve_value(mapping, {"s": "x" * 200_000})
    assert caught.value.problems == [f"@merge: a string of more than {MAX_MERGED_STRING_CHARS} characters to merge"]


def test_template_argument_may_be_a_directive() -> None:
    assert transform({"@template": {"@path": "$.tpl"}}, {"tpl": "Hi {{name}}", "name": "Ada"}) == "Hi Ada"


# --------------------------------------------------------------------------------------------------
# @literal (schema-fixtures/directives/@literal.json)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mapping", "data", "expected"),
    [
        ({"simple": {"@literal": False}}, {}, {"simple": False}),
        (
            {"nested": {"@literal": {"a": {"@path": "$.a"}, "b": {"@path": "$.b"}}}},
            {"a": "some value"},
            {"nested": {"a": "some value"}},
        ),
        (
            {"nested": {"@literal": {"level1": {"level2": {"level3": {"@path": "$.deep.value"}}}}}},
            {"deep": {"value": "deeply nested value"}},
            {"nested": {"level1": {"level2": {"level3": "deeply nested value"}}}},
        ),
        ({"empty": {"@literal": {}}}, {}, {"empty": {}}),
        ({"@literal": "123"}, {}, "123"),
    ],
)
def test_literal_fixtures(mapping: Any, data: Any, expected: Any) -> None:
    assert transform(mapping, data) == expected


# --------------------------------------------------------------------------------------------------
# @json (schema-fixtures/directives/@json.json)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "foo", "expected"),
    [
        ("encode", "bar", '"bar"'),
        ("encode", {"bar": "baz"}, '{"bar":"baz"}'),
        ("encode", ["bar", "baz"], '["bar","baz"]'),
        ("encode", {"n": 1.0, "e": "é", "x": [None, 0.5]}, '{"n":1,"e":"é","x":[null,0.5]}'),
        ("decode", '"bar"', "bar"),
        ("decode", '{"bar":"baz"}', {"bar": "baz"}),
        ("decode", '["bar","baz"]', ["bar", "baz"]),
        ("decode", 123, 123),
    ],
)
def test_json_fixtures(mode: str, foo: Any, expected: Any) -> None:
    mapping = {"neat": {"@json": {"mode": mode, "value": {"@path": "$.foo"}}}}
    assert transform(mapping, {"foo": foo}) == {"neat": expected}


def test_json_encode_of_missing_value_is_absent() -> None:
    mapping = {"neat": {"@json": {"mode": "encode", "value": {"@path": "$.bad"}}}}
    assert transform(mapping, {"foo": {"bar": "baz"}}) == {}


def test_json_decode_of_invalid_json_is_a_mapping_error() -> None:
    with pytest.raises(MappingError) as caught:
        resolve_mapping({"neat": {"@json": {"mode": "decode", "value": {"@path": "$.foo"}}}}, {"foo": "{nope"})
    assert caught.value.problems[0].startswith("neat: @json: cannot decode value")
    with pytest.raises(MappingError):
        resolve_value({"@json": {"mode": "decode", "value": "NaN"}}, {})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=12,
)


@given(json_values)
def test_json_encode_matches_compact_json_and_round_trips(value: Any) -> None:
    encoded = resolve_value({"@json": {"mode": "encode", "value": {"@path": "$.v"}}}, {"v": value})
    assert encoded == json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    assert resolve_value({"@json": {"mode": "decode", "value": {"@path": "$.s"}}}, {"s": encoded}) == value


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (1.0, "1"),
        (-0.0, "0"),
        (0.5, "0.5"),
        (0.1 + 0.2, "0.30000000000000004"),
        (1e-7, "1e-7"),
        (1.5e-7, "1.5e-7"),
        (0.000001, "0.000001"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (123456.789, "123456.789"),
        (-2.5e30, "-2.5e+30"),
        (float("nan"), "NaN"),
        (42, "42"),
    ],
)
def test_numbers_print_like_javascript(number: float, text: str) -> None:
    assert js_number(number) == text


def test_json_stringify_drops_undefined_members_and_nulls_undefined_items() -> None:
    assert js_json({"a": UNDEFINED, "b": [UNDEFINED], "c": float("inf")}) == '{"b":[null],"c":null}'
    assert js_json(UNDEFINED) is UNDEFINED


# --------------------------------------------------------------------------------------------------
# @flatten (schema-fixtures/directives/@flatten.json, __tests__/flatten.test.ts)
# --------------------------------------------------------------------------------------------------

DEEP_ARRAYS = {"a": {"b": {"c": [{"d": [{"e": [{"f": [{"g": [{"h": [{"i": 1}]}]}]}]}]}]}}}


@pytest.mark.parametrize(
    ("foo", "separator", "omit_arrays", "expected"),
    [
        ({"bar": "baz", "aces": {"a": 1, "b": 2}}, ".", None, {"bar": "baz", "aces.a": 1, "aces.b": 2}),
        ([{"fazz": "bar", "fizz": "baz"}], ".", None, {"0.fazz": "bar", "0.fizz": "baz"}),
        ({"bar": "baz", "aces": [1, 2]}, ".", True, {"bar": "baz", "aces": [1, 2]}),
        ({"a": {"b": {"c": 1}, "d": 2}}, ".", None, {"a.b.c": 1, "a.d": 2}),
        ({"a": {"b": {"c": 1}, "d": 2}}, "/", None, {"a/b/c": 1, "a/d": 2}),
        ({"a": [{"b": 1}, {"c": 2}]}, ".", None, {"a.0.b": 1, "a.1.c": 2}),
        (DEEP_ARRAYS, ".", None, {"a.b.c.0.d.0.e.0.f.0.g.0.h.0.i": 1}),
        ([{"a": [{"b": [{"c": 1}]}, {"d": [{"e": 2}]}]}], ".", None, {"0.a.0.b.0.c": 1, "0.a.1.d.0.e": 2}),
        ({"a": {"b": {"c": [{"d": [{"e": 1}]}]}}}, ".", True, {"a.b.c": [{"d": [{"e": 1}]}]}),
        ({"a": {}, "b": None}, "_", None, {"b": None}),
        ("scalar", ".", None, {"": "scalar"}),
    ],
)
def test_flatten_fixtures(foo: Any, separator: str, omit_arrays: bool | None, expected: Any) -> None:
    options: dict[str, Any] = {"value": {"@path": "$.foo"}, "separator": separator}
    if omit_arrays is not None:
        options["omitArrays"] = omit_arrays
    assert transform({"neat": {"@flatten": options}}, {"foo": foo}) == {"neat": expected}


def test_flatten_of_missing_value_is_an_empty_object() -> None:
    mapping = {"neat": {"@flatten": {"value": {"@path": "$.foo"}, "separator": ","}}}
    assert transform(mapping, {"bar": {"x": 1}}) == {"neat": {}}


# --------------------------------------------------------------------------------------------------
# @merge (schema-fixtures/directives/@merge.json, index.test.ts)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("direction", "objects", "data", "expected"),
    [
        ("left", [], {}, {}),
        ("right", [], {}, {}),
        ("left", [{"cool": True}], {}, {"cool": True}),
        ("right", [{"cool": True}, {"cool": "you bet"}], {}, {"cool": "you bet"}),
        ("right", [{"cool": True}, {"@path": "foo"}], {"foo": {"bar": "baz"}}, {"cool": True, "bar": "baz"}),
        (
            "right",
            [{"cool": True, "hey": "there"}, {"@path": "foo"}],
            {"foo": {"bar": "baz", "hey": "you"}},
            {"cool": True, "bar": "baz", "hey": "you"},
        ),
        ("left", [{"cool": True}, {"cool": "you bet"}], {}, {"cool": True}),
        ("left", [{"cool": True}, {"@path": "foo"}], {"foo": {"bar": "baz"}}, {"cool": True, "bar": "baz"}),
        (
            "left",
            [{"cool": True, "hey": "there"}, {"@path": "foo"}],
            {"foo": {"bar": "baz", "hey": "you"}},
            {"cool": True, "bar": "baz", "hey": "there"},
        ),
        (
            "right",
            [{"@path": "$.hello"}, {"@path": "foo"}],
            {"foo": {"bar": "baz", "hey": "you"}},
            {"bar": "baz", "hey": "you"},
        ),
    ],
)
def test_merge_fixtures(direction: str, objects: list[Any], data: Any, expected: Any) -> None:
    assert transform({"@merge": {"direction": direction, "objects": objects}}, data) == expected


def test_merge_spreads_like_object_assign() -> None:
    objects = [{"@path": "$.text"}, {"@path": "$.num"}, {"@path": "$.nil"}, {"@path": "$.list"}]
    assert resolve_value(
        {"@merge": {"direction": "right", "objects": objects}}, {"text": "ab", "num": 3, "nil": None, "list": ["z"]}
    ) == {
        "0": "z",
        "1": "b",
    }


# --------------------------------------------------------------------------------------------------
# @transform and @excludeWhenNull (schema-fixtures, index.test.ts)
# --------------------------------------------------------------------------------------------------


def test_transform_fixtures() -> None:
    simple = {"@transform": {"apply": {"foo": {"@path": "$.a"}}, "mapping": {"cool": {"@path": "$.foo"}}}}
    assert transform(simple, {"a": 1, "b": 2}) == {"cool": 1}
    composed = {
        "@transform": {
            "apply": {"properties": {"@flatten": {"value": {"@path": "$.properties"}, "separator": "_"}}},
            "mapping": {"properties": {"@path": "$.properties"}, "topLevel": {"@path": "$.properties.nested_a"}},
        }
    }
    data = {"properties": {"test": "value", "another": "thing", "nested": {"a": "special", "b": 2}}, "more": "bar"}
    assert transform(composed, data) == {
        "properties": {"test": "value", "another": "thing", "nested_a": "special", "nested_b": 2},
        "topLevel": "special",
    }


@pytest.mark.parametrize(
    ("mapping", "data", "expected"),
    [
        (
            {"someFieldToExclude": {"neat": {"@excludeWhenNull": {"@path": "$.foo.bar"}}}},
            {"foo": {"bar": None}},
            {"someFieldToExclude": {}},
        ),
        (
            {
                "someFieldToExclude": {"@excludeWhenNull": {"@path": "$.foo.bar"}},
                "anotherField": {"@path": "$.foo.aces.a"},
            },
            {"foo": {"bar": None, "aces": {"a": 1, "b": 2}}},
            {"anotherField": 1},
        ),
        (
            {"neat": {"@excludeWhenNull": {"@path": "$.foo"}}},
            {"foo": {"bar": None, "aces": {"a": 1, "b": 2, "c": None, "d": {"a": None, "b": None}}}},
            {"neat": {"aces": {"a": 1, "b": 2, "d": {}}}},
        ),
        ({"neat": {"@excludeWhenNull": {"@path": "$.foo.bar"}}}, {"foo": {"aces": {"a": 1}}}, {}),
        ({"t": {"@excludeWhenNull": {"@template": "{{foo.bar}}"}}}, {"foo": {"bar": None}}, {"t": ""}),
    ],
)
def test_exclude_when_null_fixtures(mapping: Any, data: Any, expected: Any) -> None:
    assert transform(mapping, data) == expected


# --------------------------------------------------------------------------------------------------
# validate_mapping: every kind of mistake, all reported at once
# --------------------------------------------------------------------------------------------------


def test_unknown_directive() -> None:
    assert problems_of({"email": {"@pathh": "$.email"}}) == ['email: unknown directive "@pathh"']


def test_unknown_directive_nested_in_if_branch() -> None:
    # schema-fixtures/invalid/@if-invalid-nested-field.json
    assert problems_of({"f": {"@if": {"exists": True, "then": {"@oops": {}}}}}) == [
        'f.@if.then: unknown directive "@oops"'
    ]


@pytest.mark.parametrize(
    "obj",
    [{"@path": "$.foo", "@bar": "baz"}, {"@path": "$.foo", "bar": "baz"}],
)
def test_directive_object_with_more_than_one_key(obj: dict[str, Any]) -> None:
    (problem,) = problems_of({"f": obj})
    assert problem.startswith("f: a directive object must have exactly one key, but it has 2")


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [
        ({"f": {"@template": 123}}, "f.@template: should be a string or a mapping directive, got a number"),
        ({"f": {"@path": {}}}, "f.@path: should be a string or a mapping directive, got an object"),
        ({"f": {"@arrayPath": "nope"}}, "f.@arrayPath: should be an array [path, item shape], got a string"),
        ({"f": {"@arrayPath": [True]}}, "f.@arrayPath[0]: should be a string or a mapping directive, got a boolean"),
        ({"f": {"@arrayPath": []}}, "f.@arrayPath: needs a path as its first element"),
        ({"f": {"@case": "not an object"}}, 'f.@case: should be an object with "operator", "value", got a string'),
        ({"f": {"@case": {"value": "x"}}}, 'f.@case: needs "operator"'),
        ({"f": {"@case": {"operator": "snake"}}}, 'f.@case.operator: should be one of lower, upper, got "snake"'),
        (
            {"f": {"@replace": {"pattern": "waaaaayyytoooooloooong", "value": "x"}}},
            "f.@replace.pattern: should be a string of length 10 or less",
        ),
        (
            {"f": {"@replace": {"pattern": "", "value": "x"}}},
            "f.@replace.pattern: should be a string of length 1 or greater",
        ),
        ({"f": {"@replace": {"replacement": "granted", "value": "x"}}}, 'f.@replace: needs "pattern"'),
        ({"f": {"@replace": {"pattern": "w"}}}, 'f.@replace: needs "value"'),
        (
            {"f": {"@replace": {"pattern": "w", "value": "x", "replacement": "waaaayyyytooolong"}}},
            "f.@replace.replacement: should be a string of length 10 or less",
        ),
        (
            {"f": {"@replace": {"pattern": "w", "value": "x", "pattern2": "rrrrrrrrrrrrrrrrrrrr"}}},
            "f.@replace.pattern2: should be a string of length 10 or less",
        ),
        (
            {"f": {"@replace": {"pattern": "w", "value": "x", "global": "bla"}}},
            "f.@replace.global: should be a boolean, got a string",
        ),
        (
            {"f": {"@replace": {"pattern": "w", "value": "x", "ignorecase": "abc"}}},
            "f.@replace.ignorecase: should be a boolean, got a string",
        ),
        ({"f": {"@replace": "abc"}}, "f.@replace: should be an object with"),
        ({"f": {"@json": {"mode": "oops", "value": "x"}}}, 'f.@json.mode: should be one of encode, decode, got "oops"'),
        (
            {"f": {"@json": {"mode": "Encode", "value": "x"}}},
            'f.@json.mode: should be one of encode, decode, got "Encode"',
        ),
        ({"f": {"@json": {"mode": "encode"}}}, 'f.@json: needs "value"'),
        ({"f": {"@json": {"value": "x"}}}, 'f.@json: needs "mode"'),
        (
            {"f": {"@json": {"mode": "encode", "value": None}}},
            "f.@json.value: should be a directive or a value other than null",
        ),
        ({"f": {"@json": "not an object"}}, "f.@json: should be an object with"),
        ({"f": {"@flatten": "abcdefgh"}}, "f.@flatten: should be an object with"),
        ({"f": {"@flatten": {"value": {"@path": "$.foo"}}}}, 'f.@flatten: needs "separator"'),
        ({"f": {"@flatten": {"separator": ","}}}, 'f.@flatten: needs "value"'),
        (
            {"f": {"@flatten": {"value": 1, "separator": {"@path": "$.sep"}}}},
            "f.@flatten.separator: should be a string, got a directive",
        ),
        (
            {"f": {"@merge": {"direction": "left", "objects": {"oops": True}}}},
            "f.@merge.objects: should be an array, got an object",
        ),
        (
            {"f": {"@merge": {"direction": "left", "objects": [{}, 1]}}},
            "f.@merge.objects[1]: should be an object or a mapping directive, got a number",
        ),
        (
            {"f": {"@merge": {"direction": "up", "objects": []}}},
            'f.@merge.direction: should be one of left, right, got "up"',
        ),
        ({"f": {"@merge": {"direction": "left"}}}, 'f.@merge: needs "objects"'),
        ({"f": {"@transform": {"mapping": {"cool": 1}}}}, 'f.@transform: needs "apply"'),
        (
            {"f": {"@transform": {"apply": "string", "mapping": {"cool": 1}}}},
            "f.@transform.apply: should be an object of fields, got a string",
        ),
        ({"f": {"@transform": "string"}}, "f.@transform: should be an object with"),
        ({"f": {"@if": {"then": 1}}}, 'f.@if: needs "exists" or "blank"'),
        ({"f": {"@if": {"exists": {"@path": "$.a"}}}}, 'f.@if: needs "then" or "else"'),
        ({"f": {"@if": {"exists": None, "then": 1}}}, 'f.@if: "exists" is null, which counts as missing'),
        ({"f": {"@if": {"exists": 1, "blank": 1, "then": 1}}}, 'f.@if: has both "exists" and "blank"; use one'),
        (
            {"f": {"@if": {"exists": 1, "thne": 1, "else": 2}}},
            'f.@if: unknown key "thne" (expected exists, blank, then, else)',
        ),
        ({"f": {"@if": "yes"}}, "f.@if: should be an object with"),
        ({"f": {"@if": {"@path": "$.a"}}}, "f.@if: should be an object with"),
        ({"@path": "$.a"}, '@path: a field name cannot start with "@"'),
        ({"f": [1, {"@nope": 1}]}, 'f[1]: unknown directive "@nope"'),
        ({"f": {1, 2}}, "f: should be a mapping directive or a JSON value, got a set"),
    ],
)
def test_validation_problem_messages(mapping: dict[str, Any], expected: str) -> None:
    problems = problems_of(mapping)
    assert any(problem.startswith(expected) for problem in problems), problems


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("$.{{traits.email}}", "template placeholders do not work in a path"),
        ("$traits.email", 'a path starts with "$."'),
        ("$", 'a path starts with "$."'),
        ("$..email", 'recursive descent ("..") is not supported'),
        ("$.a..b", 'recursive descent ("..") is not supported'),
        ("$.items[*].id", "only plain keys and [n] indexes are supported"),
        ("$.items[?(@.id)]", "only plain keys and [n] indexes are supported"),
        ("$.items[-1]", "only plain keys and [n] indexes are supported"),
        ("$.items[0:2]", "array indexes are whole numbers"),
        ("$.items.*", 'wildcards ("*") are not supported'),
        ("$.a['b", "unclosed bracket"),
        ("$.a['b.c']", 'a key containing "." cannot be reached'),
    ],
)
def test_bad_path_syntax(path: str, reason: str) -> None:
    (problem,) = problems_of({"email": {"@path": path}})
    assert problem.startswith(f"email.@path: bad path {json.dumps(path)}: {reason}")


@pytest.mark.parametrize(
    "path",
    [
        "$.",
        "",
        "$..",
        "traits.email",
        "$.traits.email",
        "$.a[0].b",
        "$.a['b c'].d",
        '$.a["b"]',
        "$.[txt] non",
        "$.foo.bar.",
    ],
)
def test_good_paths_pass_validation(path: str) -> None:
    validate_mapping({"f": {"@path": path}, "g": {"@arrayPath": [path]}})


def test_bad_path_in_array_path() -> None:
    assert problems_of({"f": {"@arrayPath": ["$.items[*]", {"id": {"@path": "$..id"}}]}}) == [
        'f.@arrayPath[0]: bad path "$.items[*]": only plain keys and [n] indexes are supported '
        "(no wildcards, filters or slices)",
        'f.@arrayPath[1].id.@path: bad path "$..id": recursive descent ("..") is not supported',
    ]


def test_validation_lists_every_problem_at_once() -> None:
    mapping = {
        "email": {"@pathh": "$.email"},
        "language": {"@if": {"exists": {"@path": "$.traits.language"}}},
        "obj": {"@path": "foo.bar", "oops": True},
        "hash": {"@template": {}},
        "payload": {"deep": [{"@json": {"mode": "zip", "value": {"@path": "$.x[*]"}}}]},
        "fine": {"@path": "$.traits.email"},
    }
    assert problems_of(mapping) == [
        'email: unknown directive "@pathh"',
        'language.@if: needs "then" or "else"',
        'obj: a directive object must have exactly one key, but it has 2: "@path", "oops"',
        "hash.@template: should be a string or a mapping directive, got an object",
        'payload.deep[0].@json.value.@path: bad path "$.x[*]": only plain keys and [n] indexes are supported '
        "(no wildcards, filters or slices)",
        'payload.deep[0].@json.mode: should be one of encode, decode, got "zip"',
    ]


def test_where_prefixes_every_problem_and_error_message_joins_them() -> None:
    with pytest.raises(MappingError) as caught:
        validate_mapping({"a": {"@x": 1}, "b": {"@y": 2}}, where="subscriptions[0].mapping")
    assert caught.value.problems == [
        'subscriptions[0].mapping.a: unknown directive "@x"',
        'subscriptions[0].mapping.b: unknown directive "@y"',
    ]
    assert str(caught.value) == "; ".join(caught.value.problems)
    assert isinstance(caught.value, ValueError)


def test_mapping_must_be_an_object() -> None:
    assert problems_of(["cool"], where="m") == ["m: should be an object of fields, got an array"]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "mapping",
    [
        {"f": [1, 2]},
        {
            "f": {
                "@arrayPath": [
                    "$.products",
                    {"cash_money": {"@path": "$.price"}, "product_id": {"@path": "$.productId"}},
                ]
            }
        },
        {"f": {"@if": {"exists": {"@path": "$.foo"}, "then": {"@path": "$.bar"}, "else": {"@path": "$.baz"}}}},
        {"f": {"@replace": {"pattern": "a", "value": {"@path": "$.a"}, "ignorecase": True}}},
        {"f": {"@replace": {"pattern": "a", "value": "abc"}}},
        {"f": {"@template": "Hello, {{traits.name}}"}},
        {"f": {"@literal": {"a": [{"@path": "$.x"}]}}},
        {"f": None, "g": 1.5, "h": "text", "i": True},
    ],
)
def test_valid_mappings(mapping: dict[str, Any]) -> None:
    validate_mapping(mapping)


json_literals = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=5).filter(lambda key: not key.startswith("@")), children, max_size=3)
    ),
    max_leaves=10,
)


@given(st.dictionaries(st.text(max_size=5).filter(lambda key: not key.startswith("@")), json_literals, max_size=4))
def test_plain_values_are_valid_literals_resolved_unchanged(mapping: dict[str, Any]) -> None:
    validate_mapping(mapping)
    assert resolve_mapping(mapping, {"anything": 1}) == mapping


def test_unknown_directive_at_resolve_time_without_validation() -> None:
    with pytest.raises(MappingError) as caught:
        resolve_mapping({"email": {"@pathh": "$.email"}}, {})
    assert caught.value.problems == ["email: @pathh is not a valid directive"]


# --- depth: the resolver never recurses deeper than MAX_VALUE_DEPTH on event data -------------------------

def _nested_value(depth: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(depth):
        value = {"a": value}
    return value


def test_depth_check_is_iterative_and_exact():
    from segment_qualtrics.segment.mapping_kit import MAX_VALUE_DEPTH, value_depth_exceeds

    assert not value_depth_exceeds(_nested_value(MAX_VALUE_DEPTH - 1))   # + the leaf's object: 64 levels
    assert value_depth_exceeds([[[]]], limit=2) and not value_depth_exceeds([[[]]], limit=3)   # arrays count
    assert value_depth_exceeds(_nested_value(MAX_VALUE_DEPTH))
    assert value_depth_exceeds(_nested_value(200_000))   # no RecursionError, whatever the depth
    assert not value_depth_exceeds("x" * 10) and not value_depth_exceeds([])


def test_an_event_deeper_than_the_limit_is_a_mapping_error_not_a_recursion_error():
    from segment_qualtrics.segment.mapping_kit import MappingError, resolve_mapping, resolve_value

    event = {"type": "track", "properties": _nested_value(5000)}
    with pytest.raises(MappingError, match="deeper than 64"):
        resolve_mapping({"data": {"@path": "$.properties"}}, event)
    with pytest.raises(MappingError, match="deeper than 64"):
        resolve_value({"@path": "$.properties"}, event)


def test_json_decode_of_a_deep_string_is_refused():
    from segment_qualtrics.segment.mapping_kit import MappingError, resolve_mapping

    mapping = {"data": {"@json": {"mode": "decode", "value": {"@path": "$.properties.blob"}}}}
    for depth in (100, 100_000):   # past the limit; past what json.loads itself can parse
        event = {"type": "track", "properties": {"blob": "[" * depth + "]" * depth}}
        with pytest.raises(MappingError, match="deeper than 64"):
            resolve_mapping(mapping, event)
    shallow = {"type": "track", "properties": {"blob": "[[1]]"}}
    assert resolve_mapping(mapping, shallow) == {"data": [[1]]}


def test_each_directive_registers_its_resolver_and_its_validator_together() -> None:
    from segment_qualtrics.segment.mapping_kit.engine import DIRECTIVES

    assert sorted(DIRECTIVES) == sorted(["@path", "@literal", "@if", "@case", "@replace", "@arrayPath", "@template",
                                         "@flatten", "@json", "@merge", "@transform", "@excludeWhenNull"])
    for name, directive in DIRECTIVES.items():
        assert directive.name == name and callable(directive.resolve) and callable(directive.validate)
    # One table for both walks: a name unknown to one is unknown to the other, with mapping-kit's words.
    with pytest.raises(MappingError) as caught:
        validate_mapping({"f": {"@pathh": "$.a"}})
    assert caught.value.problems == ['f: unknown directive "@pathh"']
    with pytest.raises(MappingError) as caught:
        resolve_mapping({"f": {"@pathh": "$.a"}}, {})
    assert caught.value.problems == ["f: @pathh is not a valid directive"]
