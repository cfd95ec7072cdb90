"""StateManager (SPEC §9) on SQLite and PostgreSQL, with and without Redis."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from core.errors import Conflict, IllegalTransition, NotFound, VersionConflict
from core.managers.state import StateDefinitionError

GRAPH = {"todo": ["doing"], "doing": ["todo", "done"], "done": []}


# --- definitions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("transitions", "initial", "message"),
    [
        ({"a": ["b"]}, "a", "'b': not a state"),
        ({"a": ["a"]}, "z", "initial state 'z' is not one of a"),
        ({}, "a", "non-empty mapping"),
        ({"a": "b"}, "a", "must be a list of states"),
        ({"bad state": []}, "bad state", "must match"),
    ],
)
def test_define_checks_the_graph(app: Any, transitions: dict[str, Any], initial: str, message: str) -> None:
    state = app.extensions["keel"].state
    with pytest.raises(StateDefinitionError, match=message):
        state.define("m", transitions, initial=initial)


def test_define_is_idempotent_but_refuses_another_graph(app: Any) -> None:
    state = app.extensions["keel"].state
    first = state.define("m", GRAPH, initial="todo")
    assert state.define("m", GRAPH, initial="todo") is first
    with pytest.raises(StateDefinitionError, match="already defined"):
        state.define("m", {"todo": []}, initial="todo")


def test_unknown_kind_is_an_error_naming_the_fix(app: Any) -> None:
    with pytest.raises(StateDefinitionError, match=r"'nope' is not defined .*define\(\)"):
        app.extensions["keel"].state.get("nope", "1")


# --- records --------------------------------------------------------------------------------


def test_create_get_update_transition_history(sm: Any) -> None:
    created = sm.create("job", "j1", {"title": "a", "n": 1}, actor="user:1")
    assert created["state"] == "todo" and created["version"] == 1 and created["data"] == {"title": "a", "n": 1}
    assert set(created) >= {"kind", "key", "state", "data", "version", "updated_at"}
    assert sm.get("job", "j1") == created

    updated = sm.update("job", "j1", {"n": 2}, expected_version=1, actor="user:1")
    assert updated["version"] == 2 and updated["data"] == {"title": "a", "n": 2} and updated["state"] == "todo"
    moved = sm.transition("job", "j1", "doing", data={"by": "bob"}, actor="user:2")
    assert moved["state"] == "doing" and moved["version"] == 3 and moved["data"]["by"] == "bob"
    assert sm.get("job", "j1") == moved

    history = sm.history("job", "j1")
    assert [(h["from"], h["to"], h["actor"], h["version"]) for h in history] == [
        (None, "todo", "user:1", 1),
        ("todo", "doing", "user:2", 3),
    ]
    assert all(h["at"].endswith("+00:00") for h in history)
    assert sm.history("job", "j1", limit=1)[0]["to"] == "doing"


def test_missing_record_duplicate_and_stale_version(sm: Any) -> None:
    with pytest.raises(NotFound):
        sm.get("job", "nope")
    with pytest.raises(NotFound):
        sm.transition("job", "nope", "doing")
    with pytest.raises(NotFound):
        sm.history("job", "nope")
    sm.create("job", 7)
    with pytest.raises(Conflict, match="already exists"):
        sm.create("job", "7")
    with pytest.raises(VersionConflict) as info:
        sm.update("job", 7, {"x": 1}, expected_version=5)
    assert info.value.status == 409 and info.value.code == "conflict"
    assert info.value.details == {"expected_version": 5, "current_version": 1}
    with pytest.raises(VersionConflict):
        sm.transition("job", 7, "doing", expected_version=2)
    assert sm.get("job", 7)["version"] == 1


def test_list_and_count_by_state(sm: Any) -> None:
    for i in range(5):
        sm.create("job", f"k{i}", {"i": i})
    sm.transition("job", "k1", "doing")
    sm.transition("job", "k3", "doing")
    assert [r["key"] for r in sm.list("job")] == ["k0", "k1", "k2", "k3", "k4"]
    assert [r["key"] for r in sm.list("job", state="doing")] == ["k1", "k3"]
    assert [r["key"] for r in sm.list("job", limit=2, offset=1)] == ["k1", "k2"]
    assert sm.count("job") == 5 and sm.count("job", state="todo") == 3


def _drive_to(sm: Any, key: str, target: str) -> None:
    """Reach ``target`` from the initial state by a legal path."""
    path = {"todo": [], "doing": ["doing"], "done": ["doing", "done"]}[target]
    for step in path:
        sm.transition("job", key, step)


def test_every_pair_of_states_is_checked_against_the_graph(sm: Any) -> None:
    states = list(GRAPH)
    for n, (source, target) in enumerate(itertools.product(states, states)):
        key = f"pair{n}"
        sm.create("job", key)
        _drive_to(sm, key, source)
        before = sm.get("job", key)
        assert before["state"] == source
        if target in GRAPH[source]:
            after = sm.transition("job", key, target)
            assert (after["state"], after["version"]) == (target, before["version"] + 1), (source, target)
        else:
            with pytest.raises(IllegalTransition) as info:
                sm.transition("job", key, target)
            assert info.value.status == 409 and info.value.details["from"] == source, (source, target)
            assert sm.get("job", key)["version"] == before["version"], (source, target)
    with pytest.raises(IllegalTransition, match="not a state"):
        sm.transition("job", "pair0", "archived")


def test_state_changed_hook_and_on_transition_listeners(state_app: Any, sm: Any) -> None:
    am = state_app.extensions["keel"]
    changes: list[tuple[str, str | None, str, int]] = []
    transitions: list[dict[str, Any]] = []
    am.hooks.register(
        "state_changed", lambda **e: changes.append((e["change"], e["from_state"], e["to_state"], e["version"]))
    )
    sm.on_transition("job", lambda **e: transitions.append(e))

    def broken(**_: Any) -> None:
        raise RuntimeError("listener bug")

    sm.on_transition("job", broken)
    sm.create("job", "h")
    sm.update("job", "h", {"x": 1})
    result = sm.transition("job", "h", "doing", actor="user:9")  # the broken listener does not fail it
    assert result["state"] == "doing"
    assert changes == [("created", None, "todo", 1), ("updated", "todo", "todo", 2), ("transition", "todo", "doing", 3)]
    assert len(transitions) == 1
    assert transitions[0]["actor"] == "user:9" and transitions[0]["record"]["version"] == 3


def test_history_is_persisted_across_restarts(make_app: Callable[..., Any], stack_config: dict[str, Any]) -> None:
    first = make_app(**stack_config).extensions["keel"].state
    first.define("job", GRAPH, initial="todo")
    first.create("job", "p")
    first.transition("job", "p", "doing", actor="user:1")
    first.transition("job", "p", "done", actor="user:2")
    second = make_app(**stack_config).extensions["keel"].state
    second.define("job", GRAPH, initial="todo")
    assert [h["to"] for h in second.history("job", "p")] == ["todo", "doing", "done"]
    assert second.get("job", "p")["state"] == "done"


# --- concurrency ----------------------------------------------------------------------------


def _run_threads(n: int, target: Callable[[int], None]) -> None:
    errors: list[BaseException] = []

    def wrap(i: int) -> None:
        try:
            target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors


def test_racing_transitions_exactly_one_wins(sm: Any) -> None:
    sm.create("job", "race")
    barrier = threading.Barrier(16)
    outcomes: list[str] = []
    lock = threading.Lock()

    def racer(i: int) -> None:
        barrier.wait()
        try:
            # half pin the version they saw, half just ask for the edge
            sm.transition("job", "race", "doing", expected_version=1 if i % 2 else None, actor=f"user:{i}")
            result = "ok"
        except VersionConflict:
            result = "version"
        except IllegalTransition:
            result = "illegal"
        with lock:
            outcomes.append(result)

    _run_threads(16, racer)
    assert outcomes.count("ok") == 1, outcomes
    assert len(outcomes) == 16
    record = sm.get("job", "race")
    assert (record["state"], record["version"]) == ("doing", 2)
    history = sm.history("job", "race")
    assert [(h["from"], h["to"]) for h in history] == [(None, "todo"), ("todo", "doing")]


def test_no_lost_update_under_concurrent_writers(sm: Any, stack: str) -> None:
    threads, per_thread = 16, 25 if stack == "postgresql+redis" else 12
    sm.create("job", "counter", {"n": 0})

    def writer(_: int) -> None:
        done = 0
        while done < per_thread:
            current = sm.get("job", "counter")  # cached read, possibly stale
            try:
                sm.update("job", "counter", {"n": current["data"]["n"] + 1}, expected_version=current["version"])
            except VersionConflict:
                continue
            done += 1

    _run_threads(threads, writer)
    final = sm.get("job", "counter")
    assert final["data"]["n"] == threads * per_thread
    assert final["version"] == 1 + threads * per_thread


def test_concurrent_transitions_record_no_illegal_edge(sm: Any) -> None:
    """Writers flip todo <-> doing and try done; the history is exactly a legal walk."""
    sm.create("job", "walk")

    def walker(i: int) -> None:
        targets = ["doing", "todo", "done"] if i % 4 == 0 else ["doing", "todo"]
        for n in range(12):
            try:
                sm.transition("job", "walk", targets[n % len(targets)])
            except (IllegalTransition, VersionConflict):
                pass

    _run_threads(8, walker)
    history = sm.history("job", "walk", limit=1000)
    assert history[0]["to"] == "todo" and history[0]["from"] is None
    for previous, step in itertools.pairwise(history):
        assert step["from"] == previous["to"]
        assert step["to"] in GRAPH[step["from"]]
        assert step["version"] > previous["version"]
    final = sm.get("job", "walk")
    assert final["state"] == history[-1]["to"]


def test_database_is_the_source_of_truth(state_app: Any, sm: Any) -> None:
    sm.create("job", "truth", {"v": 1})
    sm.transition("job", "truth", "doing")
    engine = state_app.extensions["keel"].db.sql
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT state, version FROM keel_state WHERE record_key = 'truth'")).one()
        count = conn.execute(sa.text("SELECT count(*) FROM keel_state_history WHERE record_key = 'truth'")).scalar()
    assert tuple(row) == ("doing", 2)
    assert count == 2
