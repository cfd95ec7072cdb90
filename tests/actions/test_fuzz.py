"""The loader never raises on arbitrary input: it returns actions or positioned problems."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from core.actions.schema import check_document
from core.actions.yamlsafe import parse_tree

YAML_ALPHABET = st.sampled_from([*list("abc:-[]{},&*!|>'\"#%@` \n\t01.yY~"), "version: 1\n", "actions:\n", "  x:\n"])


def resolver(module: str, method: str) -> str | None:
    return None if (module, method) == ("demo", "echo") else f"no handler {module}.{method}"


def check(text: str) -> None:
    root, problems = parse_tree(text)
    if root is not None or not problems:
        _specs, more = check_document(root, implied_module="demo", resolver=resolver)
        problems = problems + more
    lines = text.count("\n") + 1
    for p in problems:
        assert 1 <= p.line <= lines + 1 and p.col >= 1 and p.message


@settings(max_examples=200, deadline=None)
@given(st.lists(YAML_ALPHABET, max_size=60).map("".join))
def test_random_yaml_never_raises(text: str) -> None:
    check(text)


@settings(max_examples=100, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=20,
    )
)
def test_random_structures_never_raise(value: object) -> None:
    import json

    check("version: 1\nactions:\n  x:\n    handler: echo\n    params: " + json.dumps(value) + "\n")
    check("version: 1\nactions: " + json.dumps({"x": value}) + "\n")
