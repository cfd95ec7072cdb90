"""The Redis store: one EVALSHA of ``sliding_window.lua`` per plan (NOSCRIPT → EVAL, which
also caches the script on the server for the next call)."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import redis as redis_lib

from core.limits.plan import BANNED, BanPolicy, Outcome, Plan, TierState

LUA = (Path(__file__).parent / "sliding_window.lua").read_text(encoding="utf-8")
LUA_SHA = hashlib.sha1(LUA.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1


class RedisStore:
    """Evaluates plans atomically on Redis; keys live under ``prefix``."""

    def __init__(self, client: redis_lib.Redis, prefix: str, policy: BanPolicy) -> None:
        self.client = client
        self.prefix = prefix
        self.policy = policy
        self._pid = os.getpid()
        self._free: list[Any] = []  # idle connections of _command

    # -- keys -------------------------------------------------------------------------------
    def ban_key(self, kind: str, identifier: str) -> str:
        return f"{self.prefix}ban:{kind}:{identifier}"

    def viol_key(self, kind: str, identifier: str) -> str:
        return f"{self.prefix}viol:{kind}:{identifier}"

    def strikes_key(self, kind: str, identifier: str) -> str:
        return f"{self.prefix}strikes:{kind}:{identifier}"

    def log_key(self, key: str) -> str:
        return f"{self.prefix}rl:{key}"

    # -- the one round trip -----------------------------------------------------------------
    def evaluate(self, plan: Plan) -> Outcome:
        prefix = self.prefix
        keys: list[str] = []
        for kind, ident in plan.identities:  # ban_key, viol_key, strikes_key (inlined: hot path)
            keys += [f"{prefix}ban:{kind}:{ident}", f"{prefix}viol:{kind}:{ident}", f"{prefix}strikes:{kind}:{ident}"]
        keys += plan.revocation_keys
        keys += [f"{prefix}rl:{c.key}" for c in plan.limits]  # log_key
        p = self.policy
        args: list[Any] = [
            os.urandom(8).hex(),
            len(plan.identities),
            len(plan.revocation_keys),
            len(plan.limits),
            p.after,
            p.window_ms,
            p.base_ms,
            p.max_ms,
            p.strike_memory_ms,
            plan.force_violation + 1,
        ]
        for check in plan.limits:
            args += [check.blame + 1, len(check.tiers)]
            for tier in check.tiers:
                args += [tier.limit, tier.window_ms]
        try:
            raw = self._command("EVALSHA", LUA_SHA, len(keys), *keys, *args)
        except redis_lib.exceptions.NoScriptError:
            raw = self._command("EVAL", LUA, len(keys), *keys, *args)
        status, which, ms, now, rev, flat, strikes, rejected = raw
        states = [
            TierState(check, check.tiers[flat[i + 1] - 1], flat[i + 2], flat[i + 3])
            for i in range(0, len(flat), 4)
            for check in (plan.limits[flat[i] - 1],)
        ]
        return Outcome(
            status=int(status),
            now_ms=int(now),
            states=states,
            identity=int(which) - 1,
            retry_ms=int(ms),
            strikes=int(strikes),
            rejected_limit=int(rejected) - 1,
            revocation_values=list(rev) if status != BANNED else None,
        )

    def _command(self, *args: Any) -> Any:
        """One command on one of the store's own connections.

        The limiter never retries (the breaker decides) and runs one command per request, so
        it keeps its own small free list of connections instead of going through the client's
        pool (whose ``get_connection``/``release`` — a lock, a pid check, a readiness poll
        syscall and observability counters — cost more CPU than packing and parsing the call).
        ``list.pop``/``append`` are atomic, so threads share the list safely; a connection is
        only returned to it after a complete reply (redis-py disconnects one whose reply was
        cut short, and it reconnects on its next command)."""
        if self._pid != os.getpid():  # forked: the parent's sockets are not ours to use
            self._pid, self._free = os.getpid(), []
        free = self._free
        try:
            conn = free.pop()
        except IndexError:
            pool = self.client.connection_pool
            conn = pool.connection_class(**pool.connection_kwargs)
        try:
            conn.send_command(*args)
            reply = conn.read_response()
        except redis_lib.ResponseError:
            free.append(conn)  # an error reply (NOSCRIPT, a script error): the connection is fine
            raise
        except BaseException:
            conn.disconnect()
            raise
        free.append(conn)
        return reply

    def close(self) -> None:
        """Close the store's connections (and the client's pool)."""
        free, self._free = self._free, []
        for conn in free:
            conn.disconnect()
        self.client.close()

    # -- bans -------------------------------------------------------------------------------
    def set_ban(
        self, kind: str, identifier: str, ttl_ms: int, strikes: int = 0, *, only_if_absent: bool = False
    ) -> None:
        """Ban for ``ttl_ms``; ``only_if_absent`` for restores (an existing ban wins)."""
        if ttl_ms <= 0:
            return
        ttl = ttl_ms
        until_ms = int(time.time() * 1000) + ttl  # informative: the script reads the TTL
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self.ban_key(kind, identifier), until_ms, px=ttl, nx=only_if_absent)
        if strikes:
            skey = self.strikes_key(kind, identifier)
            if only_if_absent:
                pipe.setnx(skey, strikes)
            else:
                pipe.set(skey, strikes)
            pipe.pexpire(skey, ttl + self.policy.strike_memory_ms)
        pipe.execute()

    def delete_ban(self, kind: str, identifier: str) -> bool:
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.ban_key(kind, identifier))
        pipe.delete(self.viol_key(kind, identifier))
        removed, _ = pipe.execute()
        return bool(removed)

    def ban_remaining_ms(self, kind: str, identifier: str) -> int | None:
        ttl = int(self.client.pttl(self.ban_key(kind, identifier)))
        if ttl == -1:
            return self.policy.max_ms
        return ttl if ttl > 0 else None

    def now_ms(self) -> int:
        sec, usec = self.client.time()
        return int(sec) * 1000 + int(usec) // 1000

    def ping(self) -> None:
        self.client.ping()
