"""The validation chokepoint (stores/validation.py): each hostile value of issue 37 point 6 is a typed
`InvalidInputError` naming the field, and values in range pass unchanged."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from persona_agent.core.errors import InvalidInputError, InvalidUserIdError
from persona_agent.stores.validation import (
    MAX_INT32,
    MAX_JSON_DEPTH,
    check_json,
    metadata_json,
    parse_json,
    to_utc_naive,
    validate_id,
    validate_text,
    validate_user_id,
    validate_version,
)


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize(
    "value",
    [1e20, -1e13, 2**200, datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))), float("inf"), float("nan"), True],
)
def test_times_out_of_range_or_not_times_are_refused_naming_the_field(value):
    with pytest.raises(InvalidInputError) as info:
        to_utc_naive(value, "created_at")
    assert info.value.field == "created_at"


def test_times_at_the_ends_of_the_range_pass():
    assert to_utc_naive(datetime(1, 1, 1), "t") == datetime(1, 1, 1)
    assert to_utc_naive(datetime(9999, 12, 31, 23, 59, tzinfo=UTC), "t") == datetime(9999, 12, 31, 23, 59)
    assert to_utc_naive(-62135596800, "t") == datetime(1, 1, 1)
    assert to_utc_naive(0.5, "t") == datetime(1970, 1, 1, 0, 0, 0, 500000)


@pytest.mark.parametrize("value", ["²", "٣", 2**200, MAX_INT32 + 1, -1, "-1", "1.0", 1.0, True, None, "9" * 5000])
def test_versions_that_are_not_numbers_in_range_are_refused(value):
    with pytest.raises(InvalidInputError) as info:
        validate_version(value, "version", aliases=["live"])
    assert info.value.field == "version" and "live" in info.value.reason


@pytest.mark.parametrize(("value", "number"), [(0, 0), ("7", 7), (MAX_INT32, MAX_INT32), (str(MAX_INT32), MAX_INT32)])
def test_versions_in_range_pass(value, number):
    assert validate_version(value) == number


@pytest.mark.parametrize("text", ["a\ud800", "\udfff", "nul\x00"])
def test_texts_with_a_lone_surrogate_or_nul_are_refused(text):
    with pytest.raises(InvalidInputError, match=r"surrogate|NUL") as info:
        validate_text(text, "query", 100)
    assert info.value.field == "query"


@pytest.mark.parametrize("value", ["a\ud800", "a\x00", ["alice"], True, 7, ""])
def test_ids_must_be_clean_strings(value):
    with pytest.raises(InvalidUserIdError):
        validate_user_id(value)
    with pytest.raises(InvalidInputError) as info:
        validate_id(value, "interaction_id")
    assert info.value.field == "interaction_id"


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        ({"k": "\ud800"}, "metadata.k"),
        ({"\ud800": 1}, "metadata.'\\ud800'"),
        ({"tags": ["ok", "a\x00"]}, "metadata.tags.1"),
        ({"f": float("nan")}, "metadata.f"),
        ({"x": json.loads(deep(MAX_JSON_DEPTH))}, "metadata.x" + ".0" * (MAX_JSON_DEPTH - 1)),
    ],
)
def test_metadata_is_checked_all_the_way_down(metadata, field):
    with pytest.raises(InvalidInputError) as info:
        metadata_json(metadata)
    assert info.value.field == field


def test_check_json_needs_no_recursion():
    nested: list = []
    for _ in range(100_000):  # far deeper than Python's recursion limit
        nested = [nested]
    with pytest.raises(InvalidInputError, match="nested deeper"):
        check_json({"x": nested}, "metadata")
    check_json({"x": json.loads(deep(MAX_JSON_DEPTH - 1))}, "metadata")


@pytest.mark.parametrize(
    "body",
    [
        deep(100_000),
        '{"a": NaN}',
        '{"a": Infinity}',
        '{"a": 1e400}',
        '{"a": ' + "9" * 5000 + "}",
        b'{"a": "\xed\xa0\x80"}',
    ],
)
def test_parse_json_refuses_what_json_responses_and_duckdb_cannot_carry(body):
    with pytest.raises(InvalidInputError) as info:
        parse_json(body, "body")
    assert info.value.field.startswith("body")


def test_parse_json_leaves_syntax_errors_to_the_caller():
    with pytest.raises(json.JSONDecodeError):
        parse_json("{", "body")
    assert parse_json('{"a": [1, 2.5, "x"]}') == {"a": [1, 2.5, "x"]}
