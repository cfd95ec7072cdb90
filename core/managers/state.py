"""StateManager: versioned state machines that never lose an update (SPEC §9).

``am.state.define(kind, transitions, initial)`` declares a machine (the graph is checked);
records ``{kind, key, state, data, version, created_at, updated_at}`` live in the table
``keel_state`` and every transition is appended to ``keel_state_history`` (who, when, from,
to) in the same database transaction.

Consistency model:

- The database is the source of truth. Every write reads the current row and then applies
  ``UPDATE ... WHERE kind = :k AND record_key = :key AND version = :v`` (compare-and-set): a
  writer that lost a race changes nothing and either retries against the new row (no
  ``expected_version`` given) or gets :class:`~core.errors.VersionConflict`. An edge not in the
  graph is :class:`~core.errors.IllegalTransition`. Both are 409 ``conflict``.
- Redis is a write-through cache shared by the workers (``state:<kind>:<key>``); a cached
  record is only ever replaced by a newer version (see ``RedisManager.cache_set_if_newer``).
- Each process keeps an in-process cache that is invalidated over Redis pub/sub
  (``state:invalidate``). It is only trusted while that subscription is connected: when it
  drops (Redis down), reads bypass it, and it is emptied on reconnect (messages may have been
  missed).
- Redis down: reads and writes go to the database (the cache is bypassed, ``/health``
  reports ``degraded``); cache entries that could not be refreshed are deleted as soon as
  Redis answers again (their TTL, ``STATE_CACHE_TTL``, bounds the case where this process
  dies first).

Every change fires the ``state_changed`` hook; ``on_transition(kind, callback)`` listeners
run after a transition of that kind is committed.
"""

from __future__ import annotations

import builtins
import json
import logging
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

import sqlalchemy as sa
from flask import Flask

from core.errors import IllegalTransition, KeelError, NotFound, VersionConflict
from core.managers.base import Manager
from core.managers.database import utc_timestamp

if TYPE_CHECKING:
    from core.app_manager import AppManager
    from core.managers.database import DatabaseManager
    from core.managers.hooks import HooksManager
    from core.managers.redis import RedisManager, Subscription

logger = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MAX_KEY_LENGTH = 191
CAS_RETRIES = 50  # a writer without expected_version retries a lost race this many times
LOCAL_CACHE_MAX = 10_000
INVALIDATE_CHANNEL = "state:invalidate"


class StateDefinitionError(KeelError):
    """A state machine definition is invalid, or a kind is used before it is defined."""


@dataclass(frozen=True)
class Machine:
    kind: str
    transitions: Mapping[str, frozenset[str]]
    initial: str

    @property
    def states(self) -> list[str]:
        return list(self.transitions)

    def allows(self, source: str, target: str) -> bool:
        return target in self.transitions.get(source, frozenset())


def state_tables(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    """Declare (or return) the two state tables in ``metadata``."""
    if "keel_state" in metadata.tables:
        return metadata.tables["keel_state"], metadata.tables["keel_state_history"]
    records = sa.Table(
        "keel_state",
        metadata,
        sa.Column("kind", sa.String(64), primary_key=True),
        sa.Column("record_key", sa.String(MAX_KEY_LENGTH), primary_key=True),
        sa.Column("state", sa.String(64), nullable=False),
        sa.Column("data", sa.Text, nullable=False),  # JSON; portable (Oracle has no JSON type in SQLAlchemy Core)
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", utc_timestamp(), nullable=False),
        sa.Column("updated_at", utc_timestamp(), nullable=False),
        sa.Index("ix_keel_state_kind_state", "kind", "state"),
        sa.Index("ix_keel_state_kind_created", "kind", "created_at"),
    )
    history = sa.Table(
        "keel_state_history",
        metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), sa.Identity(), primary_key=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("record_key", sa.String(MAX_KEY_LENGTH), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("from_state", sa.String(64), nullable=True),
        sa.Column("to_state", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(191), nullable=True),
        sa.Column("changed_at", utc_timestamp(), nullable=False),
        sa.Index("ix_keel_state_history_record", "kind", "record_key", "id"),
    )
    return records, history


def select_record(records: sa.Table, kind: str, key: str) -> sa.Select[Any]:
    return sa.select(records).where(records.c.kind == kind, records.c.record_key == key)


def cas_update(records: sa.Table, kind: str, key: str, expected: int, **values: Any) -> sa.Update:
    """``UPDATE keel_state SET ... WHERE kind = :k AND record_key = :key AND version = :expected``."""
    return (
        sa.update(records)
        .where(records.c.kind == kind, records.c.record_key == key, records.c.version == expected)
        .values(**values)
    )


def list_records(records: sa.Table, kind: str, state: str | None, limit: int, offset: int) -> sa.Select[Any]:
    query = sa.select(records).where(records.c.kind == kind)
    if state is not None:
        query = query.where(records.c.state == state)
    return query.order_by(records.c.created_at, records.c.record_key).limit(max(0, limit)).offset(max(0, offset))


def history_query(history: sa.Table, kind: str, key: str, limit: int) -> sa.Select[Any]:
    return (
        sa.select(history)
        .where(history.c.kind == kind, history.c.record_key == key)
        .order_by(history.c.id.desc())
        .limit(max(0, limit))
    )


def _iso(value: datetime) -> str:
    if value.tzinfo is None:  # SQLite returns naive datetimes; we only ever store UTC
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


class StateManager(Manager):
    name: ClassVar[str] = "state"

    def __init__(self) -> None:
        self._machines: dict[str, Machine] = {}
        self._listeners: dict[str, list[Callable[..., Any]]] = {}
        self._local: OrderedDict[tuple[str, str], tuple[float, int, int, str | None]] = OrderedDict()
        self._local_lock = threading.Lock()
        self._pending: set[str] = set()
        self._pending_lock = threading.Lock()
        self._origin = uuid.uuid4().hex
        self._subscription: Subscription | None = None
        self.cache_ttl = 300
        self.local_ttl = 30.0

    def init_app(self, app: Flask, am: AppManager) -> None:
        super().init_app(app, am)
        self._db: DatabaseManager = am.db
        self._redis: RedisManager = am.redis
        self._hooks: HooksManager = am.hooks
        self.cache_ttl = am.settings["STATE_CACHE_TTL"]
        self.local_ttl = am.settings["STATE_LOCAL_CACHE_TTL"]
        self.records, self.history_table = state_tables(am.db.metadata)
        if self.local_ttl > 0:
            self._subscription = am.redis.subscribe(INVALIDATE_CHANNEL, self._on_invalidate)

    # -- machines ----------------------------------------------------------------------------
    def define(self, kind: str, transitions: Mapping[str, Iterable[str]], initial: str) -> Machine:
        """Declare the machine ``kind``; the graph is checked now.

        ``transitions`` maps every state to the states it may move to (``[]`` for a final
        state). Defining the same graph again is a no-op; a different one is an error.
        """
        where = f"state machine {kind!r}"
        if not isinstance(kind, str) or not _NAME_RE.match(kind):
            raise StateDefinitionError(f"{where}: the kind must match {_NAME_RE.pattern}")
        if not isinstance(transitions, Mapping) or not transitions:
            raise StateDefinitionError(f"{where}: transitions must be a non-empty mapping of state -> [states]")
        graph: dict[str, frozenset[str]] = {}
        for source, targets in transitions.items():
            if not isinstance(source, str) or not _NAME_RE.match(source):
                raise StateDefinitionError(f"{where}: state {source!r} must match {_NAME_RE.pattern}")
            if isinstance(targets, str) or not isinstance(targets, Iterable):
                raise StateDefinitionError(
                    f"{where}: transitions[{source!r}] must be a list of states, got {targets!r}"
                )
            graph[source] = frozenset(targets)
        for source, targets in graph.items():
            unknown = sorted(t for t in targets if t not in graph)
            if unknown:
                raise StateDefinitionError(
                    f"{where}: {source!r} -> {', '.join(map(repr, unknown))}: not a state "
                    f"(states: {', '.join(graph)}); add it as a key of transitions"
                )
        if initial not in graph:
            raise StateDefinitionError(f"{where}: initial state {initial!r} is not one of {', '.join(graph)}")
        machine = Machine(kind, graph, initial)
        existing = self._machines.get(kind)
        if existing is not None:
            if existing == machine:
                return existing
            raise StateDefinitionError(f"{where} is already defined with another graph")
        self._machines[kind] = machine
        return machine

    def machine(self, kind: str) -> Machine:
        try:
            return self._machines[kind]
        except KeyError:
            known = ", ".join(sorted(self._machines)) or "none"
            raise StateDefinitionError(
                f"state machine {kind!r} is not defined (defined: {known}); call state.define() first"
            ) from None

    def on_transition(self, kind: str, callback: Callable[..., Any]) -> None:
        """Call ``callback(**event)`` after every committed transition of ``kind``.

        ``event``: ``kind, key, change, from_state, to_state, version, actor, record``.
        A raising listener is logged; the transition stays committed.
        """
        self.machine(kind)
        self._listeners.setdefault(kind, []).append(callback)

    # -- reads -------------------------------------------------------------------------------
    def get(self, kind: str, key: str | int) -> dict[str, Any]:
        """The record; :class:`~core.errors.NotFound` when there is none.

        Served from the in-process cache, then Redis, then the database.
        """
        self.machine(kind)
        key = self._key(key)
        self._flush_pending()
        cached = self._local_get(kind, key)
        if cached is not None:
            return cached
        generation = self._generation()
        hit = self._redis.cache_get(self._cache_key(kind, key))
        if isinstance(hit, dict) and "version" in hit and hit["version"] >= self._local_floor(kind, key, generation):
            self._local_put(kind, key, hit, generation)
            return hit
        row = self._db.read(lambda conn: self._select(conn, kind, key))
        if row is None:
            raise NotFound(f"{kind} {key!r} not found")
        record = self._record(row)
        self._cache(record, generation)
        return record

    def list(
        self, kind: str, state: str | None = None, limit: int = 100, offset: int = 0
    ) -> builtins.list[dict[str, Any]]:
        """Records of ``kind`` (optionally in ``state``), oldest first, from the database."""
        self.machine(kind)
        query = list_records(self.records, kind, state, limit, offset)
        rows = self._db.read(lambda conn: conn.execute(query).mappings().all())
        return [self._record(r) for r in rows]

    def count(self, kind: str, state: str | None = None) -> int:
        self.machine(kind)
        t = self.records
        query = sa.select(sa.func.count()).select_from(t).where(t.c.kind == kind)
        if state is not None:
            query = query.where(t.c.state == state)
        return int(self._db.read(lambda conn: conn.execute(query).scalar_one()))

    def history(self, kind: str, key: str | int, limit: int = 100) -> builtins.list[dict[str, Any]]:
        """The last ``limit`` transitions (creation first), oldest first:
        ``{"from", "to", "actor", "at", "version"}``. NotFound for an unknown record."""
        self.machine(kind)
        key = self._key(key)
        query = history_query(self.history_table, kind, key, limit)

        def fetch(conn: sa.Connection) -> tuple[list[Any], bool]:
            rows = conn.execute(query).mappings().all()
            exists = bool(rows) or self._select(conn, kind, key) is not None
            return list(rows), exists

        rows, exists = self._db.read(fetch)
        if not exists:
            raise NotFound(f"{kind} {key!r} not found")
        return [
            {
                "from": r["from_state"],
                "to": r["to_state"],
                "actor": r["actor"],
                "at": _iso(r["changed_at"]),
                "version": r["version"],
            }
            for r in reversed(rows)
        ]

    # -- writes ------------------------------------------------------------------------------
    def create(
        self, kind: str, key: str | int, data: Mapping[str, Any] | None = None, *, actor: str | None = None
    ) -> dict[str, Any]:
        """Create a record in the machine's initial state (version 1).

        :class:`~core.errors.Conflict` when the key exists.
        """
        from core.errors import Conflict

        machine = self.machine(kind)
        key = self._key(key)
        now = datetime.now(UTC)
        payload = self._dump(data)
        values = {
            "kind": kind,
            "record_key": key,
            "state": machine.initial,
            "data": payload,
            "version": 1,
            "created_at": now,
            "updated_at": now,
        }
        try:
            with self._db.transaction() as conn:
                conn.execute(sa.insert(self.records).values(**values))
                self._insert_history(conn, kind, key, 1, None, machine.initial, actor, now)
        except sa.exc.IntegrityError:
            raise Conflict(f"{kind} {key!r} already exists") from None
        record = self._record(values)
        self._after_change("created", record, None, actor)
        return record

    def transition(
        self,
        kind: str,
        key: str | int,
        to: str,
        data: Mapping[str, Any] | None = None,
        expected_version: int | None = None,
        actor: str | None = None,
    ) -> dict[str, Any]:
        """Move the record to ``to`` along an edge of the graph; ``data`` is merged in.

        With ``expected_version`` the write happens only on exactly that version
        (:class:`~core.errors.VersionConflict` otherwise). Without it, a lost race is retried
        against the new state — which may then make the edge illegal.
        """
        machine = self.machine(kind)
        if to not in machine.transitions:
            raise IllegalTransition(
                f"{kind}: {to!r} is not a state (states: {', '.join(machine.states)})",
                details={"to": to, "states": machine.states},
            )

        def check(current: Mapping[str, Any]) -> None:
            if not machine.allows(current["state"], to):
                allowed = sorted(machine.transitions[current["state"]])
                raise IllegalTransition(
                    f"{kind} {current['record_key']!r}: {current['state']} -> {to} is not allowed"
                    f" (allowed from {current['state']}: {', '.join(allowed) or 'none'})",
                    details={"from": current["state"], "to": to, "allowed": allowed},
                )

        return self._write(kind, key, data, expected_version, actor, to=to, check=check)

    def update(
        self,
        kind: str,
        key: str | int,
        data: Mapping[str, Any],
        expected_version: int | None = None,
        *,
        actor: str | None = None,
    ) -> dict[str, Any]:
        """Merge ``data`` into the record's data (shallow) and bump its version.

        Same compare-and-set rules as :meth:`transition`; the state does not change.
        """
        self.machine(kind)
        return self._write(kind, key, data, expected_version, actor, to=None, check=None)

    def _write(
        self,
        kind: str,
        key: str | int,
        data: Mapping[str, Any] | None,
        expected_version: int | None,
        actor: str | None,
        *,
        to: str | None,
        check: Callable[[Mapping[str, Any]], None] | None,
    ) -> dict[str, Any]:
        key = self._key(key)
        if data is not None and not isinstance(data, Mapping):
            raise TypeError(f"state data must be a mapping, got {type(data).__name__}")
        self._flush_pending()
        for _attempt in range(CAS_RETRIES):
            generation = self._generation()
            # One connection: read the row, check it, compare-and-set. The read takes no lock;
            # the UPDATE's version condition is what makes the write safe.
            with self._db.transaction() as conn:
                current = self._select(conn, kind, key)
                if current is None:
                    raise NotFound(f"{kind} {key!r} not found")
                stale = expected_version is not None and current["version"] != expected_version
                if not stale:
                    if check is not None:
                        check(current)
                    merged = json.loads(current["data"])
                    if data:
                        merged.update(data)
                    now = datetime.now(UTC)
                    version = current["version"] + 1
                    new_state = to if to is not None else current["state"]
                    result = conn.execute(
                        cas_update(
                            self.records,
                            kind,
                            key,
                            current["version"],
                            state=new_state,
                            data=self._dump(merged),
                            version=version,
                            updated_at=now,
                        )
                    )
                    won = result.rowcount == 1
                    if won and to is not None:
                        self._insert_history(conn, kind, key, version, current["state"], to, actor, now)
            if stale:
                self._cache(self._record(current), generation)  # readers should see the newer one
                raise VersionConflict(
                    f"{kind} {key!r} is at version {current['version']}, not {expected_version}",
                    details={"expected_version": expected_version, "current_version": current["version"]},
                )
            if won:
                record = self._record(
                    {**current, "state": new_state, "data": merged, "version": version, "updated_at": now}
                )
                self._after_change("transition" if to is not None else "updated", record, current["state"], actor)
                return record
            self._local_drop(kind, key)
            if expected_version is not None:
                raise VersionConflict(
                    f"{kind} {key!r} was changed concurrently (version {expected_version} is no longer current)",
                    details={"expected_version": expected_version},
                )
        raise VersionConflict(f"{kind} {key!r}: too much contention, gave up after {CAS_RETRIES} attempts")

    def _insert_history(
        self,
        conn: sa.Connection,
        kind: str,
        key: str,
        version: int,
        source: str | None,
        target: str,
        actor: str | None,
        at: datetime,
    ) -> None:
        conn.execute(
            sa.insert(self.history_table).values(
                kind=kind,
                record_key=key,
                version=version,
                from_state=source,
                to_state=target,
                actor=None if actor is None else str(actor)[:191],
                changed_at=at,
            )
        )

    def _after_change(self, change: str, record: dict[str, Any], source: str | None, actor: str | None) -> None:
        kind, key = record["kind"], record["key"]
        self._cache(record, self._generation())
        self._redis.publish(INVALIDATE_CHANNEL, {"o": self._origin, "k": kind, "key": key, "v": record["version"]})
        event = {
            "kind": kind,
            "key": key,
            "change": change,
            "from_state": source,
            "to_state": record["state"],
            "version": record["version"],
            "actor": actor,
            "record": record,
        }
        if change == "transition":
            for listener in self._listeners.get(kind, ()):
                try:
                    listener(**event)
                except Exception:
                    # The transition is committed; a broken listener must not turn it into an
                    # error for the caller (who would retry a change that already happened).
                    logger.exception("state %s: on_transition listener %r raised", kind, listener)
        self._hooks.trigger("state_changed", **event)

    # -- caches ------------------------------------------------------------------------------
    def _cache(self, record: dict[str, Any], generation: int) -> None:
        cache_key = self._cache_key(record["kind"], record["key"])
        if not self._redis.cache_set_if_newer(cache_key, record, record["version"], self.cache_ttl):
            with self._pending_lock:
                self._pending.add(cache_key)
        self._local_put(record["kind"], record["key"], record, generation)

    def _flush_pending(self) -> None:
        """Delete Redis entries that missed an update while Redis was down."""
        if not self._pending:
            return
        with self._pending_lock:
            keys = list(self._pending)
        if self._redis.cache_delete(*keys):
            with self._pending_lock:
                self._pending.difference_update(keys)
            logger.info("state cache: dropped %d entries written while Redis was down", len(keys))

    def _generation(self) -> int:
        """The subscription's generation, or -1 when the in-process cache must not be used."""
        sub = self._subscription
        if sub is None or not sub.connected:
            return -1
        return sub.generation

    def _local_get(self, kind: str, key: str) -> dict[str, Any] | None:
        generation = self._generation()
        if generation < 0:
            return None
        with self._local_lock:
            entry = self._local.get((kind, key))
        if entry is None:
            return None
        expires, gen, _version, raw = entry
        if raw is None or gen != generation or expires <= time.monotonic():
            return None
        return json.loads(raw)

    def _local_put(self, kind: str, key: str, record: dict[str, Any], generation: int) -> None:
        if generation < 0 or self.local_ttl <= 0:
            return
        version = int(record["version"])
        raw = json.dumps(record, separators=(",", ":"))
        with self._local_lock:
            entry = self._local.get((kind, key))
            if entry is not None and entry[1] == generation and entry[2] > version and entry[0] > time.monotonic():
                return  # never replace a newer record (or a newer invalidation) with an older one
            self._local[(kind, key)] = (time.monotonic() + self.local_ttl, generation, version, raw)
            self._local.move_to_end((kind, key))
            while len(self._local) > LOCAL_CACHE_MAX:
                self._local.popitem(last=False)

    def _local_floor(self, kind: str, key: str, generation: int) -> int:
        """The newest version this process knows of (from an invalidation), or 0."""
        with self._local_lock:
            entry = self._local.get((kind, key))
        if entry is None or entry[1] != generation or entry[0] <= time.monotonic():
            return 0
        return entry[2]

    def _local_drop(self, kind: str, key: str) -> None:
        with self._local_lock:
            self._local.pop((kind, key), None)

    def _on_invalidate(self, message: Any) -> None:
        if not isinstance(message, dict) or message.get("o") == self._origin:
            return
        kind, key, version = message.get("k"), message.get("key"), message.get("v")
        if not isinstance(kind, str) or not isinstance(key, str) or not isinstance(version, int):
            return
        generation = self._generation()
        with self._local_lock:
            entry = self._local.get((kind, key))
            if entry is not None and entry[1] == generation and entry[2] >= version:
                return
            # A tombstone: a miss that still blocks older versions from being cached.
            self._local[(kind, key)] = (time.monotonic() + self.local_ttl, generation, version, None)

    # -- helpers -----------------------------------------------------------------------------
    @staticmethod
    def _key(key: str | int) -> str:
        text = str(key)
        if not text or len(text) > MAX_KEY_LENGTH:
            raise ValueError(f"state key must be 1..{MAX_KEY_LENGTH} characters")
        return text

    def _cache_key(self, kind: str, key: str) -> str:
        return f"state:{kind}:{key}"

    def _select(self, conn: sa.Connection, kind: str, key: str) -> Any:
        return conn.execute(select_record(self.records, kind, key)).mappings().first()

    @staticmethod
    def _dump(data: Mapping[str, Any] | None) -> str:
        if data is None:
            return "{}"
        if not isinstance(data, Mapping):
            raise TypeError(f"state data must be a mapping, got {type(data).__name__}")
        return json.dumps(dict(data), separators=(",", ":"), sort_keys=True)

    @staticmethod
    def _record(row: Any) -> dict[str, Any]:
        data = row["data"]
        return {
            "kind": row["kind"],
            "key": row["record_key"],
            "state": row["state"],
            "data": json.loads(data) if isinstance(data, str) else dict(data),
            "version": row["version"],
            "created_at": _iso(row["created_at"]),
            "updated_at": _iso(row["updated_at"]),
        }

    def health(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "status": "healthy",
            "machines": sorted(self._machines),
            "cache": self._redis.backend,
            "local_cache_entries": len(self._local),
        }
        if self._pending:
            report["pending_invalidations"] = len(self._pending)
        if self._redis.backend == "redis" and self._redis.breaker.is_open:
            report.update(status="degraded", fallback="cache bypassed; reads and writes go to the database")
        return report

    def dispose(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None
