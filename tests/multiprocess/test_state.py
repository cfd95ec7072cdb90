"""SPEC §9 through HTTP on two instances: racing transitions have exactly one winner, and
concurrent updates of one task lose nothing."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.multiprocess.conftest import Cluster

pytestmark = pytest.mark.slow  # real gunicorn processes (started once per session)


def _post(cluster: Cluster, i: int, action: str, token: str, ip: str, body: dict[str, Any]) -> Any:
    return cluster.instances[i % 2].request("POST", f"/actions/{action}", token=token, ip=ip, json=body)


def _create(cluster: Cluster, token: str, ip: str) -> dict[str, Any]:
    resp = _post(cluster, 0, "create_task", token, ip, {"title": "race"})
    assert resp.status_code == 201, resp.text
    return dict(resp.json()["result"])


def _get(cluster: Cluster, i: int, task_id: int, token: str, ip: str) -> dict[str, Any]:
    resp = cluster.instances[i % 2].request("GET", f"/actions/get_task?id={task_id}", token=token, ip=ip)
    assert resp.status_code == 200, resp.text
    return dict(resp.json()["result"])


def _race(n: int, fn: Any) -> list[Any]:
    """Run fn(i) for i in range(n) in n threads released together."""
    barrier = threading.Barrier(n)

    def run(i: int) -> Any:
        barrier.wait(5)
        return fn(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def test_racing_transitions_from_both_instances_have_exactly_one_winner(cluster: Cluster) -> None:
    ip = "198.51.100.50"
    user = cluster.new_user(ip=ip)
    token = user["token"]
    task = _create(cluster, token, ip)
    # todo -> doing, 8 times at once over A and B: one wins, the others see "doing -> doing"
    results = _race(8, lambda i: _post(cluster, i, "transition_task", token, ip, {"id": task["id"], "to": "doing"}))
    codes = sorted(r.status_code for r in results)
    assert codes == [200] + [409] * 7, [r.text for r in results]
    assert all(r.json()["error"]["code"] == "conflict" for r in results if r.status_code == 409)
    # doing -> done and doing -> todo race: exactly one of them happens
    results = _race(8, lambda i: _post(cluster, i, "transition_task", token, ip,
                                       {"id": task["id"], "to": "done" if i % 2 else "todo"}))
    winners = [r.json()["result"] for r in results if r.status_code == 200]
    assert len(winners) == 1, [r.text for r in results]
    assert all(r.status_code == 409 for r in results if r.status_code != 200)
    final = _get(cluster, 1, task["id"], token, ip)
    assert final["state"] == winners[0]["state"] and final["version"] == 3, final
    history = cluster.b.request("GET", f"/actions/task_history?id={task['id']}", token=token, ip=ip).json()["result"]
    assert [(h["from"], h["to"]) for h in history] == [(None, "todo"), ("todo", "doing"), ("doing", final["state"])]
    assert [h["version"] for h in history] == [1, 2, 3]


def test_concurrent_partial_updates_from_both_instances_lose_nothing(cluster: Cluster) -> None:
    ip = "198.51.100.51"
    token = cluster.new_user(ip=ip)["token"]
    task = _create(cluster, token, ip)
    for n in range(3):
        fields = [{"title": f"title {n}"}, {"description": f"description {n}"}, {"priority": n + 1},
                  {"tags": [f"round-{n}"]}]
        results = _race(4, lambda i, f=fields: _post(cluster, i, "update_task", token, ip, {"id": task["id"], **f[i]}))
        assert [r.status_code for r in results] == [200] * 4, [r.text for r in results]
        final = _get(cluster, n, task["id"], token, ip)
        assert final["title"] == f"title {n}" and final["description"] == f"description {n}"
        assert final["priority"] == n + 1 and final["tags"] == [f"round-{n}"]
        assert final["version"] == 1 + 4 * (n + 1), final


def test_read_modify_write_with_expected_version_over_both_instances_keeps_every_write(cluster: Cluster) -> None:
    ip = "198.51.100.52"
    token = cluster.new_user(ip=ip)["token"]
    task = _create(cluster, token, ip)
    writers = 6
    conflicts = [0] * writers

    def append_tag(i: int) -> None:
        for attempt in range(writers + 2):
            current = _get(cluster, i + attempt, task["id"], token, ip)
            resp = _post(cluster, i + attempt + 1, "update_task", token, ip, {
                "id": task["id"], "tags": [*current["tags"], f"w{i}"], "expected_version": current["version"]})
            if resp.status_code == 200:
                return
            assert resp.status_code == 409, resp.text
            assert resp.json()["error"]["details"]["expected_version"] == current["version"]
            conflicts[i] += 1
        raise AssertionError(f"writer {i} never got through")

    _race(writers, append_tag)
    final = _get(cluster, 0, task["id"], token, ip)
    assert sorted(final["tags"]) == sorted(f"w{i}" for i in range(writers)), final
    assert final["version"] == 1 + writers, final
