"""The keyword tables of core.actions.schema are complete: every keyword an error lists has
exactly one checker, and every action key has one."""

from __future__ import annotations

from core.actions import schema


def test_every_listed_parameter_keyword_has_one_checker() -> None:
    assert sorted(schema.PARAM_KEYS) == sorted(schema.KEYWORDS)
    for level in schema.LEVELS:
        assert set(schema.ALLOWED_AT[level]) <= set(schema.KEYWORDS)
    assert "default" not in schema.ALLOWED_AT["property"]
    assert {"required", "default", "secret"}.isdisjoint(schema.ALLOWED_AT["items"])


def test_every_listed_action_key_has_one_checker() -> None:
    assert sorted(schema.ACTION_KEYS) == sorted(schema.ACTION_TABLE)


def test_keyword_groups_name_known_types() -> None:
    for keyword in schema.KEYWORDS.values():
        assert keyword.group is None or keyword.group in schema.GROUP_TYPES
    for group, types in schema.GROUP_TYPES.items():
        assert set(types) <= set(schema.TYPES), group
