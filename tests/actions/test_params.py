"""The compiled parameter checks and string coercion (core.actions.params)."""

from __future__ import annotations

from typing import Any

import pytest

from core.actions.params import CoercionError, coerce_string, compile_check


@pytest.mark.parametrize(
    ("fmt", "good", "bad"),
    [
        ("email", ["a@b.io", "first.last+tag@example.co.uk"], ["a@b", "@b.io", "a b@c.io", "a@b..io"]),
        (
            "uuid",
            ["123e4567-e89b-12d3-a456-426614174000"],
            ["123e4567e89b12d3a456426614174000", "xyz", "123e4567-e89b-12d3-a456-42661417400g"],
        ),
        ("date", ["2025-02-28", "2024-02-29"], ["2025-02-30", "2025-2-3", "20250228"]),
        (
            "date-time",
            ["2025-01-31T12:00:00Z", "2025-01-31T12:00:00.123+02:00"],
            ["2025-01-31", "2025-01-31T25:00:00Z", "2025-01-31T12:00:00"],
        ),
        ("uri", ["https://example.com/x?y=1", "urn:isbn:0451450523"], ["example.com", "http://exa mple.com", "://x"]),
    ],
)
def test_formats(fmt: str, good: list[str], bad: list[str]) -> None:
    check = compile_check({"type": "string", "format": fmt})
    for value in good:
        assert check(value) is None, value
    for value in bad:
        errors = check(value)
        assert errors and errors[0][1].startswith("must be"), value


@pytest.mark.parametrize(
    ("schema", "value", "message"),
    [
        ({"type": "number", "exclusiveMinimum": 0}, 0, "must be > 0"),
        ({"type": "number", "exclusiveMaximum": 1.5}, 1.5, "must be < 1.5"),
        ({"type": "integer", "enum": [1, 2]}, 3, "must be one of: 1, 2"),
        ({"type": "boolean", "enum": [True]}, 1, "must be a boolean"),
        ({"type": "string", "pattern": "^[a-z]+$"}, "AB", "must match the pattern ^[a-z]+$"),
        ({"type": "array", "minItems": 2}, [1], "must have at least 2 items"),
        ({"type": ["string", "null"], "minLength": 2}, 5, "must be a string or null"),
    ],
)
def test_rules(schema: dict[str, Any], value: Any, message: str) -> None:
    assert compile_check(schema)(value) == [("", message)]


def test_nullable_and_nested_paths() -> None:
    check = compile_check(
        {
            "type": ["object", "null"],
            "properties": {"xs": {"type": "array", "items": {"type": "integer", "maximum": 3}}},
        }
    )
    assert check(None) is None
    assert check({"xs": [1, 9, "a"]}) == [(".xs[1]", "must be <= 3"), (".xs[2]", "must be an integer")]


@pytest.mark.parametrize(
    ("t", "raw", "value"),
    [
        ("integer", "-42", -42),
        ("number", "2.5e3", 2500.0),
        ("number", "7", 7),
        ("boolean", "TRUE", True),
        ("boolean", "0", False),
        ("string", "", ""),
    ],
)
def test_coercion(t: str, raw: str, value: Any) -> None:
    assert coerce_string(t, raw) == value


@pytest.mark.parametrize(
    ("t", "raw"),
    [
        ("integer", "4.0"),
        ("integer", ""),
        ("number", "nan"),
        ("number", "1_000"),
        ("boolean", "yes"),
        ("object", "{}"),
        ("integer", "9" * 101),
    ],
)
def test_coercion_errors(t: str, raw: str) -> None:
    with pytest.raises(CoercionError):
        coerce_string(t, raw)
