"""Two instances that share only PostgreSQL (no REDIS_URL): the database carries revocations
(a "not revoked" answer is reused for 0.5 s), bans (re-read every 2 s) and the state guard."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.multiprocess.conftest import Cluster
from tests.multiprocess.test_state import _create, _post, _race

pytestmark = pytest.mark.slow  # real gunicorn processes (started once per module)

REVOCATION_BOUND_S = 1.0  # README: another worker sees a revocation within a second
BAN_BOUND_S = 2.5  # README: without Redis each process re-reads the bans table every 2 s


def _all(cluster: Cluster, path: str, token: str, ip: str, times: int = 6) -> list[tuple[str, int]]:
    return [(inst.name, inst.request("GET", path, token=token, ip=ip).status_code)
            for _ in range(times) for inst in cluster.instances]


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def test_logout_on_a_is_refused_everywhere_within_a_second(cluster_without_redis: Cluster) -> None:
    cluster, ip = cluster_without_redis, "198.51.100.60"
    user = cluster.new_user(ip=ip)
    token = user["token"]
    assert {s for _, s in _all(cluster, "/auth/me", token, ip)} == {200}  # every cache says "not revoked"
    assert cluster.a.request("POST", "/auth/logout", token=token, ip=ip).status_code == 200
    _sleep_until(time.monotonic() + REVOCATION_BOUND_S)
    assert {s for _, s in _all(cluster, "/auth/me", token, ip)} == {401}


def test_ban_on_a_reaches_b_and_lift_on_b_reaches_a(cluster_without_redis: Cluster) -> None:
    cluster, ip, admin_ip = cluster_without_redis, "198.51.100.61", "192.0.2.61"
    user = cluster.new_user(ip=ip)
    token = user["token"]

    def admin(inst: Any, action: str, **body: Any) -> None:
        resp = inst.request("POST", f"/actions/{action}", token=cluster.admin_token, ip=admin_ip, json=body)
        assert resp.status_code == 200, resp.text

    assert {s for _, s in _all(cluster, "/actions/list_tasks", token, ip)} == {200}
    admin(cluster.a, "ban", kind="user", identifier=str(user["id"]), seconds=600)
    _sleep_until(time.monotonic() + BAN_BOUND_S)
    assert {s for _, s in _all(cluster, "/actions/list_tasks", token, ip)} == {403}
    admin(cluster.b, "lift_ban", kind="user", identifier=str(user["id"]))
    _sleep_until(time.monotonic() + BAN_BOUND_S)
    assert {s for _, s in _all(cluster, "/actions/list_tasks", token, ip)} == {200}


def test_racing_transitions_have_one_winner_without_redis(cluster_without_redis: Cluster) -> None:
    cluster, ip = cluster_without_redis, "198.51.100.62"
    token = cluster.new_user(ip=ip)["token"]
    task = _create(cluster, token, ip)
    results = _race(8, lambda i: _post(cluster, i, "transition_task", token, ip, {"id": task["id"], "to": "doing"}))
    assert sorted(r.status_code for r in results) == [200] + [409] * 7, [r.text for r in results]
