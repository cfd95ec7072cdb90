"""SPEC §6: a token revoked on one instance is refused by every worker of the other at once."""

from __future__ import annotations

import time

import pytest

from tests.multiprocess.conftest import Cluster

pytestmark = pytest.mark.slow  # real gunicorn processes (started once per session)


def test_logout_on_a_is_refused_on_b_within_a_second(cluster: Cluster) -> None:
    ip = "198.51.100.40"
    user = cluster.new_user(ip=ip)
    token = cluster.login(user["username"], user["password"], on=cluster.a, ip=ip)["access_token"]
    for _ in range(4):  # warm every worker of B with this token (any short "not revoked" cache)
        assert cluster.b.request("GET", "/auth/me", token=token, ip=ip).status_code == 200
    assert cluster.a.request("POST", "/auth/logout", token=token, ip=ip).status_code == 200
    start = time.monotonic()
    first = cluster.b.request("GET", "/auth/me", token=token, ip=ip)
    assert first.status_code == 401, first.text
    assert time.monotonic() - start < 1.0
    for _ in range(8):
        for inst in cluster.instances:
            assert inst.request("GET", "/auth/me", token=token, ip=ip).status_code == 401
    # the user's other login is untouched
    assert cluster.b.request("GET", "/auth/me", token=user["token"], ip=ip).status_code == 200


def test_logout_all_on_b_refuses_every_token_on_a(cluster: Cluster) -> None:
    ip = "198.51.100.41"
    user = cluster.new_user(ip=ip)
    other = cluster.login(user["username"], user["password"], on=cluster.a, ip=ip)
    for _ in range(4):
        assert cluster.a.request("GET", "/auth/me", token=other["access_token"], ip=ip).status_code == 200
    assert cluster.b.request("POST", "/auth/logout-all", token=user["token"], ip=ip).status_code == 200
    for _ in range(8):
        for inst in cluster.instances:
            for token in (user["token"], other["access_token"]):
                assert inst.request("GET", "/auth/me", token=token, ip=ip).status_code == 401
    refreshed = cluster.a.request("POST", "/auth/refresh", ip=ip, json={"refresh_token": other["refresh_token"]})
    assert refreshed.status_code == 401, refreshed.text


def test_api_key_revoked_on_a_is_refused_by_every_worker_of_b_at_once(cluster: Cluster) -> None:
    ip = "198.51.100.42"
    user = cluster.new_user(ip=ip)
    made = cluster.a.request("POST", "/auth/api-keys", token=user["token"], ip=ip,
                             json={"name": "mp", "scopes": ["tasks:read"]})
    assert made.status_code == 201, made.text
    body = made.json()
    key, key_id = body["key"], body["api_key"]["id"]
    headers = {"X-API-Key": key}
    for _ in range(6):  # every worker of both instances caches the verified key
        for inst in cluster.instances:
            resp = inst.request("GET", "/actions/list_tasks", ip=ip, headers=headers)
            assert resp.status_code == 200, resp.text
    gone = cluster.a.request("DELETE", f"/auth/api-keys/{key_id}", token=user["token"], ip=ip)
    assert gone.status_code == 200, gone.text
    start = time.monotonic()
    for _ in range(6):
        for inst in (cluster.b, cluster.a):
            assert inst.request("GET", "/actions/list_tasks", ip=ip, headers=headers).status_code == 401
    assert time.monotonic() - start < 2.0  # well inside API_KEY_CACHE_TTL (5 s): not a cache expiry
