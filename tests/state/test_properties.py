"""Property: for any machine and any sequence of requested transitions, the StateManager
accepts exactly the edges of the graph, and the history is exactly the accepted walk."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import IllegalTransition

STATES = ["s0", "s1", "s2", "s3"]

_counter = itertools.count()  # a fresh machine kind per example

graphs = st.fixed_dictionaries({s: st.lists(st.sampled_from(STATES), unique=True, max_size=4) for s in STATES})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(graph=graphs, initial=st.sampled_from(STATES), steps=st.lists(st.sampled_from(STATES), max_size=12))
def test_any_graph_any_walk(app: Any, graph: dict[str, list[str]], initial: str, steps: list[str]) -> None:
    sm = app.extensions["keel"].state
    kind = f"m{next(_counter)}"
    sm.define(kind, graph, initial=initial)
    sm.create(kind, "r")
    state, walk = initial, [(None, initial)]
    for target in steps:
        if target in graph[state]:
            assert sm.transition(kind, "r", target)["state"] == target
            walk.append((state, target))
            state = target
        else:
            try:
                sm.transition(kind, "r", target)
            except IllegalTransition:
                pass
            else:
                raise AssertionError(f"{state} -> {target} accepted but not in {graph}")
    record = sm.get(kind, "r")
    assert (record["state"], record["version"]) == (state, len(walk))
    assert [(h["from"], h["to"]) for h in sm.history(kind, "r", limit=100)] == walk

