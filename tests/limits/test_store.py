"""The sliding-log algorithm, driven by an injectable clock (in-process store), and the
same plans on the Redis script."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import ConfigError
from core.limits.memory import MemoryStore
from core.limits.parse import Tier, parse_limit
from core.limits.plan import ADMITTED, BANNED, NEWLY_BANNED, REJECTED, BanPolicy, LimitCheck, Plan
from core.limits.redis_store import RedisStore

POLICY = BanPolicy(after=3, window_ms=10_000, base_ms=60_000, max_ms=86_400_000)
NO_BANS = BanPolicy(after=10**9, window_ms=10_000, base_ms=60_000, max_ms=86_400_000)


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def one(limit: str, key: str = "k", blame: int = 0, ident: tuple[str, str] = ("ip", "1.2.3.4")) -> Plan:
    return Plan([ident], [LimitCheck("ip", key, parse_limit(limit), blame)])


def test_parse_limit_tiers_and_errors() -> None:
    assert parse_limit("20/second;300/minute") == (Tier(20, 1000), Tier(300, 60_000))
    assert parse_limit("100/5 minutes") == (Tier(100, 300_000),)
    assert parse_limit(" 3 / 2 seconds ") == (Tier(3, 2000),)
    for bad in ("", "ten/minute", "5/fortnight", "5/minute;x"):
        with pytest.raises(ConfigError):
            parse_limit(bad)


def test_window_boundary_exact_with_injected_clock() -> None:
    clock = Clock()
    store = MemoryStore(NO_BANS, clock)
    plan = one("3/10 seconds")
    for _ in range(3):
        assert store.evaluate(plan).status == ADMITTED
        clock.t += 1.0  # admitted at t0, t0+1, t0+2
    out = store.evaluate(plan)  # t0+3: window full
    assert out.status == REJECTED and out.retry_ms == 7000  # the t0 entry leaves at t0+10
    clock.t = 1_000_000.0 + 9.999
    assert store.evaluate(plan).status == REJECTED
    clock.t = 1_000_000.0 + 10.0  # t0 entry is out: exactly one slot
    assert store.evaluate(plan).status == ADMITTED
    assert store.evaluate(plan).status == REJECTED
    clock.t = 1_000_000.0 + 11.0
    out = store.evaluate(plan)
    assert out.status == ADMITTED and out.states[0].remaining == 0


def test_rejected_requests_do_not_consume() -> None:
    clock = Clock()
    store = MemoryStore(NO_BANS, clock)
    plan = one("2/10 seconds")
    store.evaluate(plan)
    store.evaluate(plan)
    for _ in range(50):
        clock.t += 0.1
        assert store.evaluate(plan).status == REJECTED
    clock.t = 1_000_000.0 + 10.0
    assert store.evaluate(plan).status == ADMITTED


def test_tiers_all_apply_and_a_rejected_tier_consumes_nothing() -> None:
    clock = Clock()
    store = MemoryStore(NO_BANS, clock)
    plan = one("2/second;3/minute")
    assert [store.evaluate(plan).status for _ in range(3)] == [ADMITTED, ADMITTED, REJECTED]
    clock.t += 1.0
    assert store.evaluate(plan).status == ADMITTED  # 3rd of the minute
    clock.t += 1.0
    out = store.evaluate(plan)
    assert out.status == REJECTED and out.retry_ms == 58_000  # minute tier: first entry at t0


def test_several_limits_all_or_nothing() -> None:
    clock = Clock()
    store = MemoryStore(NO_BANS, clock)
    ip = LimitCheck("ip", "ip", parse_limit("10/minute"), 0)
    action = LimitCheck("action", "act", parse_limit("1/minute"), 0)
    plan = Plan([("ip", "a")], [ip, action])
    assert store.evaluate(plan).status == ADMITTED
    out = store.evaluate(plan)
    assert out.status == REJECTED and out.rejected_limit == 1
    only_ip = Plan([("ip", "a")], [ip])
    # the rejected request did not count toward the IP level: 9 more fit
    assert [store.evaluate(only_ip).status for _ in range(10)].count(ADMITTED) == 9


@settings(max_examples=60, deadline=None)
@given(
    limit=st.integers(1, 6),
    window=st.integers(1, 20),
    gaps=st.lists(st.integers(0, 4000), min_size=1, max_size=120),
)
def test_never_more_than_limit_in_any_rolling_window(limit: int, window: int, gaps: list[int]) -> None:
    """Property: admitted requests never exceed the limit in any rolling window, and a request is
    refused only when the window really holds ``limit`` admitted ones (no over-refusal)."""
    clock = Clock(0.0)
    store = MemoryStore(NO_BANS, clock)
    plan = one(f"{limit}/{window} seconds")
    w = window * 1000
    admitted: list[int] = []
    now = 0
    for gap in gaps:
        now += gap
        clock.t = now / 1000
        in_window = [a for a in admitted if a > now - w]
        status = store.evaluate(plan).status
        if status == ADMITTED:
            assert len(in_window) < limit
            admitted.append(now)
        else:
            assert len(in_window) >= limit
    for i in range(len(admitted) - limit):
        assert admitted[i + limit] - admitted[i] >= w


def test_auto_ban_escalates_and_expires() -> None:
    clock = Clock()
    store = MemoryStore(POLICY, clock)  # 3 violations in 10 s -> 60 s, doubling
    plan = one("1/30 days")
    assert store.evaluate(plan).status == ADMITTED
    assert [store.evaluate(plan).status for _ in range(3)] == [REJECTED, REJECTED, NEWLY_BANNED]
    out = store.evaluate(plan)
    assert out.status == BANNED and out.retry_ms == 60_000
    clock.t += 59.9
    assert store.evaluate(plan).status == BANNED
    clock.t += 0.1
    statuses = [store.evaluate(plan).status for _ in range(3)]
    assert statuses == [REJECTED, REJECTED, NEWLY_BANNED]
    assert store.evaluate(plan).retry_ms == 120_000  # second strike: doubled
    durations = []
    for _ in range(12):
        clock.t += store.ban_remaining_ms("ip", "1.2.3.4") / 1000  # wait each ban out
        for _ in range(3):
            out = store.evaluate(plan)
        durations.append(out.retry_ms)
    assert durations[:3] == [240_000, 480_000, 960_000]
    assert durations[-1] == 86_400_000 and max(durations) == 86_400_000  # capped at 24 h


def test_forced_violation_bans_the_named_identity_only() -> None:
    clock = Clock()
    store = MemoryStore(POLICY, clock)
    failed = Plan([("ip", "9.9.9.9")], [], force_violation=0)
    assert [store.evaluate(failed).status for _ in range(3)] == [ADMITTED, ADMITTED, NEWLY_BANNED]
    assert store.ban_remaining_ms("ip", "9.9.9.9") == 60_000
    assert store.ban_remaining_ms("ip", "8.8.8.8") is None


# -- the Lua script ----------------------------------------------------------------------------


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def redis_store(redis_url: str, redis_prefix: str, request: pytest.FixtureRequest) -> Any:
    """A store on a client speaking RESP2 (Keel's own client: the reply read straight from the
    socket) or RESP3 (redis-py 8's default: through redis-py's connection layers)."""
    client = redis.Redis.from_url(redis_url, protocol=request.param)
    yield lambda policy=NO_BANS: RedisStore(client, redis_prefix, policy)
    client.close()


def test_script_short_window_on_redis(redis_store: Any) -> None:
    """Redis time drives the window: 3 per second, fired every 40 ms for 2.2 s → every rolling
    second holds at most 3 admitted, and at least 3 per second get through."""
    store = redis_store()
    plan = one("3/second", key="short")
    admitted: list[int] = []
    deadline = time.monotonic() + 2.2
    while time.monotonic() < deadline:
        out = store.evaluate(plan)
        if out.status == ADMITTED:
            admitted.append(out.now_ms)
        else:
            assert out.status == REJECTED and 0 < out.retry_ms <= 1000
        time.sleep(0.04)
    for i in range(len(admitted) - 3):
        assert admitted[i + 3] - admitted[i] >= 1000
    assert len(admitted) >= 6


def test_script_matches_the_memory_store(redis_store: Any) -> None:
    """Same plans, same answers (status, remaining) on both stores."""
    store = redis_store(POLICY)
    memory = MemoryStore(POLICY)
    plan = Plan(
        [("ip", "5.5.5.5"), ("user", "7")],
        [
            LimitCheck("ip", "ip:5.5.5.5", parse_limit("4/minute"), 0),
            LimitCheck("user", "user:7", parse_limit("2/second;3/minute"), 1),
        ],
    )
    seen = []
    for _ in range(7):
        a, b = store.evaluate(plan), memory.evaluate(plan)
        seen.append(a.status)
        assert (a.status, a.identity, a.rejected_limit) == (b.status, b.identity, b.rejected_limit)
        assert [s.remaining for s in a.states] == [s.remaining for s in b.states]
    assert seen == [ADMITTED, ADMITTED, REJECTED, REJECTED, NEWLY_BANNED, BANNED, BANNED]
    assert store.ban_remaining_ms("user", "7") is not None  # blamed on the user, not the IP
    assert store.ban_remaining_ms("ip", "5.5.5.5") is None


def test_script_reads_revocation_keys_in_the_same_call(redis_store: Any, redis_prefix: str) -> None:
    store = redis_store()
    store.client.set(redis_prefix + "deny:x", b"1")
    plan = one("5/minute", key="rev")
    plan.revocation_keys = [redis_prefix + "deny:x", redis_prefix + "deny:missing"]
    out = store.evaluate(plan)
    assert out.status == ADMITTED and out.revocation_values == [b"1", None]


def test_script_survives_script_flush(redis_store: Any) -> None:
    """NOSCRIPT (a Redis restart or SCRIPT FLUSH) falls back to EVAL transparently."""
    store = redis_store()
    plan = one("5/minute", key="flush")
    assert store.evaluate(plan).status == ADMITTED
    store.client.script_flush()
    assert store.evaluate(plan).status == ADMITTED


def test_packed_evalsha_is_what_the_connection_packs(redis_store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The EVALSHA the store writes (its constant arguments packed once per plan shape) is byte
    for byte the command redis-py packs from the same arguments."""
    import os

    from core.limits.redis_store import LUA_SHA

    store = redis_store(POLICY)
    monkeypatch.setattr(os, "urandom", lambda n: bytes(range(1, n + 1)))
    sent: list[bytes] = []
    call_packed = store._call_packed

    def spy(conn: Any, packed: bytes) -> Any:
        sent.append(packed)
        return call_packed(conn, packed)

    monkeypatch.setattr(store, "_call_packed", spy)
    plans = [
        one("5/minute", key="pack"),
        Plan(
            [("ip", "5.5.5.5"), ("user", "zoé")],
            [
                LimitCheck("ip", "ip:5.5.5.5", parse_limit("40/minute"), 0),
                LimitCheck("user", "user:zoé", parse_limit("20/second;30/minute"), 1),
                LimitCheck("action", "action:a:user:zoé", parse_limit("9/hour"), -1),
            ],
            ["deny:1", "deny:2"],
            force_violation=1,
        ),
    ]
    for plan in plans * 2:  # the second time from the packed shapes
        sent.clear()
        assert store.evaluate(plan).status == ADMITTED
        keys = [k for kind, ident in plan.identities for k in _ident_keys(store, kind, ident)]
        keys += plan.revocation_keys + [f"{store.prefix}rl:{c.key}" for c in plan.limits]
        args = store._argv(plan, bytes(range(1, 9)).hex())
        expected = b"".join(redis.Connection().pack_command("EVALSHA", LUA_SHA, len(keys), *keys, *args))
        assert sent == [expected]
    assert len(store._shapes) == 2


def _ident_keys(store: RedisStore, kind: str, ident: str) -> list[str]:
    return [store.ban_key(kind, ident), store.viol_key(kind, ident), store.strikes_key(kind, ident)]


def test_noscript_reply_keeps_the_connection(redis_store: Any) -> None:
    """After NOSCRIPT (an error reply) the connection is fine: back among the idle ones, and
    the EVAL that followed loaded the script for the next EVALSHA."""
    store = redis_store()
    plan = one("5/minute", key="noscript")
    store.evaluate(plan)
    (conn,) = store._free
    store.client.script_flush()
    assert store.evaluate(plan).status == ADMITTED
    assert store._free == [conn] and conn._sock is not None
    assert store.client.script_exists(store_sha())[0]


def store_sha() -> str:
    from core.limits.redis_store import LUA_SHA

    return LUA_SHA


def test_connection_closed_by_redis_is_replaced(redis_store: Any) -> None:
    """An idle connection that Redis closed (CLIENT KILL, a restart): the call is made again on
    a fresh connection; the dead one is disconnected, not kept."""
    store = redis_store()
    plan = one("50/minute", key="killed")
    store.evaluate(plan)
    (old,) = store._free
    old.send_command("CLIENT", "ID")
    old_id = old.read_response()
    store.client.client_kill_filter(_id=old_id)
    assert store.evaluate(plan).status == ADMITTED
    (fresh,) = store._free
    assert fresh is not old and old._sock is None and fresh._sock is not None


class _FailingReader:
    """A hiredis reader that raises on its first ``gets`` (an error mid-reply)."""

    def __init__(self, reader: Any, exc: BaseException) -> None:
        self.reader, self.exc = reader, exc

    def gets(self, *args: Any) -> Any:
        raise self.exc

    def feed(self, *args: Any) -> None:
        self.reader.feed(*args)

    def has_data(self) -> bool:
        return bool(self.reader.has_data())


class _OtherLayout:
    """A parser of another redis-py layout: none of the private parts the fast path reads."""

    def __init__(self, parser: Any) -> None:
        self._wrapped = parser

    def __getattr__(self, name: str) -> Any:
        if name in ("_reader", "_buffer", "_next_response"):
            raise AttributeError(name)
        return getattr(self._wrapped, name)


def test_another_redis_py_layout_takes_the_connections_own_calls(redis_store: Any) -> None:
    store = redis_store()
    plan = one("50/minute", key="layout")
    store.evaluate(plan)
    (conn,) = store._free
    conn._parser = _OtherLayout(conn._parser)
    outs = [store.evaluate(plan) for _ in range(3)]
    assert [o.states[0].remaining for o in outs] == [48, 47, 46]
    assert store._free == [conn]  # the same connection, kept


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_error_mid_call_leaves_no_half_read_connection(redis_store: Any, exc: BaseException) -> None:
    """Any failure between the command and its complete reply disconnects the connection and
    keeps it out of the idle list (its unread reply would answer the next call)."""
    store = redis_store()
    plan = one("50/minute", key="midcall")
    store.evaluate(plan)
    store.evaluate(plan)
    (conn,) = store._free  # one connection, reused
    conn._parser._reader = _FailingReader(conn._parser._reader, exc)
    with pytest.raises(type(exc)):
        store.evaluate(plan)
    assert store._free == [] and conn._sock is None
    out = store.evaluate(plan)  # a fresh connection, its reply its own
    assert out.status == ADMITTED and out.states[0].remaining == 50 - 4
    (fresh,) = store._free
    assert fresh is not conn and fresh._sock is not None
