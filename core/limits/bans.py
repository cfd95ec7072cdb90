"""Bans beside the limit stores: the ``keel_bans`` record and ban administration.

Redis (or the in-process store) answers requests; the ``keel_bans`` table is the record that
makes bans survive restarts of the app and of Redis: it restores them, lists them and feeds
``flask bans``. The table is declared on ``am.db.metadata`` and created with the other tables
by ``am.db.create_all()``; times are epoch milliseconds (``BigInteger``: ``NUMBER(19)`` on
Oracle). :class:`Bans` is the administration: manual bans and lifts, the record of every ban
(database, ``keel.audit`` log, ``identity_banned`` hook), and copying the record into a store.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, Protocol

import sqlalchemy as sa

from core.errors import NotFound, ServiceUnavailable, ValidationError
from core.limits.plan import to_seconds
from core.limits.store import LimitStore
from core.logs import audit

logger = logging.getLogger(__name__)

KINDS = ("ip", "user", "api_key")
MAX_BAN_SECONDS = 365 * 86_400
MEMORY_SYNC_S = 2.0  # without Redis: how often a process re-reads the bans table


class Database(Protocol):
    """What the records need of the database manager (``am.db``)."""

    def connect(self) -> AbstractContextManager[sa.Connection]: ...

    def transaction(self) -> AbstractContextManager[sa.Connection]: ...


def bans_table(metadata: sa.MetaData) -> sa.Table:
    """Declare (once per metadata) the ``keel_bans`` table."""
    if "keel_bans" in metadata.tables:
        return metadata.tables["keel_bans"]
    return sa.Table(
        "keel_bans",
        metadata,
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("identifier", sa.String(255), primary_key=True),
        sa.Column("until_ms", sa.BigInteger, nullable=False, index=True),
        sa.Column("strikes", sa.Integer, nullable=False, default=0),
        sa.Column("reason", sa.String(255), nullable=False, default=""),
        sa.Column("actor", sa.String(255), nullable=False, default=""),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
    )


class BanRecords:
    """Reads and writes ``keel_bans`` (SQLAlchemy Core, any dialect)."""

    def __init__(self, db: Database, table: sa.Table) -> None:
        self.db = db
        self.table = table

    def upsert(self, kind: str, identifier: str, until_ms: int, strikes: int, reason: str, actor: str) -> None:
        t = self.table
        row = {
            "kind": kind,
            "identifier": identifier,
            "until_ms": until_ms,
            "strikes": strikes,
            "reason": reason[:255],
            "actor": actor[:255],
            "created_ms": int(time.time() * 1000),
        }
        with self.db.transaction() as conn:
            conn.execute(t.delete().where(t.c.kind == kind, t.c.identifier == identifier))
            conn.execute(t.insert().values(**row))

    def delete(self, kind: str, identifier: str) -> bool:
        t = self.table
        with self.db.transaction() as conn:
            result = conn.execute(
                t.delete().where(t.c.kind == kind, t.c.identifier == identifier, t.c.until_ms > _now_ms())
            )
            conn.execute(t.delete().where(t.c.kind == kind, t.c.identifier == identifier))
        return bool(result.rowcount)

    def active(self) -> list[dict[str, Any]]:
        t = self.table
        with self.db.connect() as conn:
            rows = conn.execute(t.select().where(t.c.until_ms > _now_ms()).order_by(t.c.until_ms)).mappings().all()
        return [dict(r) for r in rows]

    def get(self, kind: str, identifier: str) -> dict[str, Any] | None:
        t = self.table
        with self.db.connect() as conn:
            row = (
                conn.execute(t.select().where(t.c.kind == kind, t.c.identifier == identifier, t.c.until_ms > _now_ms()))
                .mappings()
                .first()
            )
        return dict(row) if row is not None else None


def _now_ms() -> int:
    return int(time.time() * 1000)


class Bans:
    """Ban administration over the record (:class:`BanRecords`) and the live store.

    ``trigger`` is the hooks manager's ``trigger``: every new ban fires ``identity_banned``.
    """

    def __init__(self, records: BanRecords, store: LimitStore, trigger: Callable[..., Any]) -> None:
        self.records = records
        self.store = store
        self._trigger = trigger
        self._sync_lock = threading.Lock()
        self._next_sync = 0.0

    def ban(self, kind: str, identifier: str, seconds: int, actor: str = "admin") -> dict[str, Any]:
        """Ban ``kind:identifier`` for ``seconds`` (admin action, CLI)."""
        identifier = _valid_identifier(kind, identifier)
        if isinstance(seconds, bool) or not isinstance(seconds, int) or not 1 <= seconds <= MAX_BAN_SECONDS:
            raise ValidationError(details=[{"param": "seconds", "message": f"an integer from 1 to {MAX_BAN_SECONDS}"}])
        ttl_ms = seconds * 1000
        self.store.set_ban(kind, identifier, ttl_ms)
        return self.record(kind, identifier, ttl_ms, 0, reason="manual", actor=actor)

    def lift(self, kind: str, identifier: str, actor: str = "admin") -> dict[str, Any]:
        """Lift a ban now (every worker sees it on its next request: the ban lives in Redis)."""
        _check_kind(kind)
        identifier = str(identifier).strip()
        in_store = self.store.delete_ban(kind, identifier)
        in_memory = self.store.memory.delete_ban(kind, identifier)  # the fallback's copy, if any
        in_db = self.records.delete(kind, identifier)
        if not (in_store or in_memory or in_db):
            raise NotFound(f"no active ban on {kind} {identifier!r}")
        audit(
            "ban_lifted",
            message=f"ban lifted: {kind} {identifier} by {actor}",
            ban_kind=kind,
            ban_identifier=identifier,
            actor=actor,
        )
        return {"kind": kind, "identifier": identifier, "lifted": True}

    def active(self) -> list[dict[str, Any]]:
        """Active bans (the database record), soonest to end first."""
        now = time.time()
        return [
            {
                "kind": r["kind"],
                "identifier": r["identifier"],
                "until": _iso(r["until_ms"]),
                "remaining_s": max(0, math.ceil(r["until_ms"] / 1000 - now)),
                "strikes": r["strikes"],
                "reason": r["reason"],
                "actor": r["actor"],
            }
            for r in self.records.active()
        ]

    def remaining(self, kind: str, identifier: str) -> int | None:
        """Seconds left on a ban of ``kind:identifier``, ``None`` when not banned."""
        ms = self.store.ban_remaining_ms(kind, str(identifier))
        return None if ms is None else to_seconds(ms)

    def record(
        self, kind: str, identifier: str, ttl_ms: int, strikes: int, *, reason: str, actor: str
    ) -> dict[str, Any]:
        """Record a ban already live in the store: database, audit log, ``identity_banned``."""
        until_ms = int(time.time() * 1000) + ttl_ms
        try:
            self.records.upsert(kind, identifier, until_ms, strikes, reason, actor)
        except sa.exc.SQLAlchemyError:
            # The ban is live in the store; only its survival across a restart is at risk.
            logger.exception("rate limiter: could not record the ban of %s %s in the database", kind, identifier)
        seconds = to_seconds(ttl_ms)
        audit(
            "ban",
            message=f"ban: {kind} {identifier} for {seconds}s (strike {strikes}, {reason}) by {actor}",
            ban_kind=kind,
            ban_identifier=identifier,
            seconds=seconds,
            strikes=strikes,
            reason=reason,
            actor=actor,
        )
        self._trigger(
            "identity_banned", kind=kind, identifier=identifier, seconds=seconds, strikes=strikes, actor=actor
        )
        return {"kind": kind, "identifier": identifier, "seconds": seconds, "until": _iso(until_ms), "strikes": strikes}

    def restore(self) -> None:
        """Copy the record's active bans into the store answering now (Redis, or the
        per-process store while Redis is down); a ban already there wins."""
        rows = self._read_record("bans not restored")
        if rows is None:
            return
        now = int(time.time() * 1000)
        for row in rows:
            ttl = row["until_ms"] - now
            self.store.set_ban(row["kind"], row["identifier"], ttl, row["strikes"], only_if_absent=True)

    def sync_memory(self) -> None:
        """Without Redis, the database is what processes share: every ``MEMORY_SYNC_S`` the
        per-process bans are made equal to its record, so a ban or a lift done by another
        worker or by ``flask bans`` takes effect here within that time."""
        now = time.monotonic()
        if now < self._next_sync or not self._sync_lock.acquire(blocking=False):
            return
        try:
            self._next_sync = now + MEMORY_SYNC_S
            rows = self._read_record("the bans this process knows keep applying")
            if rows is not None:
                wall = int(time.time() * 1000)
                bans = {(r["kind"], r["identifier"]): (r["until_ms"] - wall, r["strikes"]) for r in rows}
                self.store.memory.replace_bans(bans)
        finally:
            self._sync_lock.release()

    def _read_record(self, consequence: str) -> list[dict[str, Any]] | None:
        """The active bans of the database, or ``None`` (logged) while it cannot be read."""
        try:
            return self.records.active()
        except ServiceUnavailable as exc:
            logger.warning("rate limiter: cannot read the bans table (%s); %s", exc, consequence)
        except sa.exc.SQLAlchemyError:
            # Not fatal: the store keeps answering; only the copy from the record is missed.
            logger.exception("rate limiter: cannot read the bans table; %s", consequence)
        return None


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValidationError(details=[{"param": "kind", "message": f"one of {', '.join(KINDS)}"}])


def _valid_identifier(kind: str, identifier: str) -> str:
    _check_kind(kind)
    identifier = str(identifier).strip()
    if not identifier or len(identifier) > 255:
        raise ValidationError(details=[{"param": "identifier", "message": "1 to 255 characters"}])
    if kind == "ip":
        try:
            return str(ipaddress.ip_address(identifier))
        except ValueError:
            raise ValidationError(details=[{"param": "identifier", "message": "an IPv4 or IPv6 address"}]) from None
    return identifier


def _iso(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="seconds")
