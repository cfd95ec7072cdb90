"""SPEC §7: one limit shared by every worker of every instance (exact), and bans issued or
lifted on one instance enforced on the other at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.multiprocess.conftest import LIMITED_N, Cluster

pytestmark = pytest.mark.slow  # real gunicorn processes (started once per session)


def test_ip_limit_is_exact_over_both_instances_and_workers(cluster: Cluster) -> None:
    ip = "198.51.100.7"

    def call(i: int) -> tuple[str, int, str]:
        inst = cluster.instances[i % 2]
        resp = inst.request("GET", "/actions/mp_limited", ip=ip)
        code = resp.json()["error"]["code"] if resp.status_code != 200 else ""
        return inst.name, resp.status_code, code

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(40)))
    admitted = [r for r in results if r[1] == 200]
    assert len(admitted) == LIMITED_N, results
    refused = {(status, code) for _, status, code in results if status != 200}
    assert refused <= {(429, "rate_limited"), (403, "banned")}, refused
    # 33 refusals are more than BAN_AFTER_VIOLATIONS: the IP is now banned on both instances
    for inst in cluster.instances:
        for _ in range(4):
            resp = inst.request("GET", "/actions/mp_info", ip=ip)
            assert resp.status_code == 403 and resp.json()["error"]["code"] == "banned", resp.text
            assert int(resp.headers["Retry-After"]) > 0
    # another client has its own N, whichever instance it reaches
    other = [cluster.instances[i % 2].request("GET", "/actions/mp_limited", ip="198.51.100.8")
             for i in range(LIMITED_N)]
    assert [r.status_code for r in other] == [200] * LIMITED_N
    assert cluster.b.request("GET", "/actions/mp_limited", ip="198.51.100.8").status_code == 429


def _call(cluster: Cluster, inst: Any, token: str, ip: str) -> tuple[int, str]:
    resp = inst.request("GET", "/actions/list_tasks", token=token, ip=ip)
    return resp.status_code, (resp.json()["error"]["code"] if resp.status_code != 200 else "")


def test_user_ban_on_a_is_enforced_on_b_and_lift_on_b_frees_a(cluster: Cluster) -> None:
    ip = "198.51.100.20"
    user = cluster.new_user(ip=ip)
    for inst in cluster.instances:
        assert _call(cluster, inst, user["token"], ip) == (200, "")
    resp = cluster.a.request("POST", "/actions/ban", token=cluster.admin_token, ip="192.0.2.20",
                             json={"kind": "user", "identifier": str(user["id"]), "seconds": 600})
    assert resp.status_code == 200, resp.text
    # at once, on every worker of B (and A), from any IP
    for i in range(8):
        assert _call(cluster, cluster.b, user["token"], f"198.51.100.{30 + i}") == (403, "banned")
        assert _call(cluster, cluster.a, user["token"], ip) == (403, "banned")
    listed = cluster.b.request("GET", "/actions/list_bans", token=cluster.admin_token, ip="192.0.2.20")
    assert listed.status_code == 200, listed.text
    assert str(user["id"]) in listed.text

    resp = cluster.b.request("POST", "/actions/lift_ban", token=cluster.admin_token, ip="192.0.2.20",
                             json={"kind": "user", "identifier": str(user["id"])})
    assert resp.status_code == 200, resp.text
    for _ in range(8):
        assert _call(cluster, cluster.a, user["token"], ip) == (200, "")
        assert _call(cluster, cluster.b, user["token"], ip) == (200, "")


def test_ip_ban_on_b_is_enforced_on_a_and_lift_on_a_frees_b(cluster: Cluster) -> None:
    ip = "203.0.113.77"
    assert cluster.a.request("GET", "/actions/mp_info", ip=ip).status_code == 200
    resp = cluster.b.request("POST", "/actions/ban", token=cluster.admin_token, ip="192.0.2.21",
                             json={"kind": "ip", "identifier": ip, "seconds": 600})
    assert resp.status_code == 200, resp.text
    for _ in range(6):
        for inst in cluster.instances:
            got = inst.request("GET", "/actions/mp_info", ip=ip)
            assert got.status_code == 403 and got.json()["error"]["code"] == "banned", got.text
    resp = cluster.a.request("POST", "/actions/lift_ban", token=cluster.admin_token, ip="192.0.2.21",
                             json={"kind": "ip", "identifier": ip})
    assert resp.status_code == 200, resp.text
    for _ in range(6):
        for inst in cluster.instances:
            assert inst.request("GET", "/actions/mp_info", ip=ip).status_code == 200
