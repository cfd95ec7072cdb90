"""StateManager: versioned state machines that never lose an update (SPEC §9).

``am.state.define(kind, transitions, initial)`` declares a machine (the graph is checked,
:mod:`core.state.machine`); records ``{kind, key, state, data, version, created_at,
updated_at}`` live in the table ``keel_state`` and every transition is appended to
``keel_state_history`` (who, when, from, to) in the same database transaction
(:mod:`core.state.tables`).

Consistency model:

- The database is the source of truth. Every write reads the current row and then applies
  ``UPDATE ... WHERE kind = :k AND record_key = :key AND version = :v`` (compare-and-set): a
  writer that lost a race changes nothing and either retries against the new row (no
  ``expected_version`` given) or gets :class:`~core.errors.VersionConflict`. An edge not in the
  graph is :class:`~core.errors.IllegalTransition`. Both are 409 ``conflict``.
- Redis is a write-through cache shared by the workers, and each process keeps an in-process
  cache invalidated over Redis pub/sub (:mod:`core.state.cache`); neither ever holds a record
  older than one this process has seen.
- Redis down: reads and writes go to the database (the cache is bypassed, ``/health``
  reports ``degraded``); cache entries that could not be refreshed are deleted as soon as
  Redis answers again.

Every change fires the ``state_changed`` hook; ``on_transition(kind, callback)`` listeners
run after a transition of that kind is committed.
"""

from __future__ import annotations

import builtins
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

import sqlalchemy as sa
from flask import Flask

from core.errors import Conflict, NotFound, VersionConflict
from core.managers.base import Manager
from core.state.cache import StateCache
from core.state.machine import Machine, StateDefinitionError, build_machine
from core.state.tables import (
    MAX_KEY_LENGTH,
    cas_update,
    count_records,
    dump_data,
    history_entry,
    history_query,
    list_records,
    select_record,
    state_tables,
    to_record,
)

if TYPE_CHECKING:
    from core.app_manager import AppManager

logger = logging.getLogger(__name__)

CAS_RETRIES = 50  # a writer without expected_version retries a lost race this many times


class StateManager(Manager):
    name: ClassVar[str] = "state"

    am: AppManager
    cache: StateCache
    records: sa.Table
    history_table: sa.Table

    def __init__(self) -> None:
        self._machines: dict[str, Machine] = {}
        self._listeners: dict[str, list[Callable[..., Any]]] = {}

    def init_app(self, app: Flask, am: AppManager) -> None:
        super().init_app(app, am)
        self.am = am
        self.records, self.history_table = state_tables(am.db.metadata)
        self.cache = StateCache(
            am.redis, ttl=am.settings["STATE_CACHE_TTL"], local_ttl=am.settings["STATE_LOCAL_CACHE_TTL"]
        )

    # -- machines ----------------------------------------------------------------------------
    def define(self, kind: str, transitions: Mapping[str, Iterable[str]], initial: str) -> Machine:
        """Declare the machine ``kind``; the graph is checked now.

        ``transitions`` maps every state to the states it may move to (``[]`` for a final
        state). Defining the same graph again is a no-op; a different one is an error.
        """
        machine = build_machine(kind, transitions, initial)
        existing = self._machines.get(kind)
        if existing is None:
            self.am.check_setup(f"state.define({kind!r})")
        if existing is not None:
            if existing == machine:
                return existing
            raise StateDefinitionError(f"state machine {kind!r} is already defined with another graph")
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
        key = _key(key)
        cached, generation = self.cache.lookup(kind, key)
        if cached is not None:
            return cached
        row = self.am.db.read(lambda conn: self._select(conn, kind, key))
        if row is None:
            raise NotFound(f"{kind} {key!r} not found")
        record = to_record(row)
        self.cache.store(record, generation)
        return record

    def list(
        self, kind: str, state: str | None = None, limit: int = 100, offset: int = 0
    ) -> builtins.list[dict[str, Any]]:
        """Records of ``kind`` (optionally in ``state``), oldest first, from the database."""
        self.machine(kind)
        query = list_records(self.records, kind, state, limit, offset)
        rows = self.am.db.read(lambda conn: conn.execute(query).mappings().all())
        return [to_record(r) for r in rows]

    def count(self, kind: str, state: str | None = None) -> int:
        self.machine(kind)
        query = count_records(self.records, kind, state)
        return int(self.am.db.read(lambda conn: conn.execute(query).scalar_one()))

    def history(self, kind: str, key: str | int, limit: int = 100) -> builtins.list[dict[str, Any]]:
        """The last ``limit`` transitions (creation first), oldest first:
        ``{"from", "to", "actor", "at", "version"}``. NotFound for an unknown record."""
        self.machine(kind)
        key = _key(key)
        query = history_query(self.history_table, kind, key, limit)

        def fetch(conn: sa.Connection) -> tuple[list[Any], bool]:
            rows = conn.execute(query).mappings().all()
            exists = bool(rows) or self._select(conn, kind, key) is not None
            return list(rows), exists

        rows, exists = self.am.db.read(fetch)
        if not exists:
            raise NotFound(f"{kind} {key!r} not found")
        return [history_entry(r) for r in reversed(rows)]

    # -- writes ------------------------------------------------------------------------------
    def create(
        self, kind: str, key: str | int, data: Mapping[str, Any] | None = None, *, actor: str | None = None
    ) -> dict[str, Any]:
        """Create a record in the machine's initial state (version 1).

        :class:`~core.errors.Conflict` when the key exists.
        """
        machine = self.machine(kind)
        key = _key(key)
        now = datetime.now(UTC)
        values = {
            "kind": kind,
            "record_key": key,
            "state": machine.initial,
            "data": dump_data(data),
            "version": 1,
            "created_at": now,
            "updated_at": now,
        }
        generation = self.cache.generation()
        try:
            with self.am.db.transaction() as conn:
                conn.execute(sa.insert(self.records).values(**values))
                self._insert_history(conn, kind, key, 1, None, machine.initial, actor, now)
        except sa.exc.IntegrityError:
            raise Conflict(f"{kind} {key!r} already exists") from None
        record = to_record(values)
        self._after_change("created", record, None, actor, generation)
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
        machine.check_target(to)
        return self._write(kind, key, data, expected_version, actor, machine=machine, to=to)

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
        machine = self.machine(kind)
        return self._write(kind, key, data, expected_version, actor, machine=machine, to=None)

    def _write(
        self,
        kind: str,
        key: str | int,
        data: Mapping[str, Any] | None,
        expected_version: int | None,
        actor: str | None,
        *,
        machine: Machine,
        to: str | None,
    ) -> dict[str, Any]:
        key = _key(key)
        if data is not None and not isinstance(data, Mapping):
            raise TypeError(f"state data must be a mapping, got {type(data).__name__}")
        self.cache.flush_pending()
        for _attempt in range(CAS_RETRIES):
            generation = self.cache.generation()  # before the read: see StateCache.generation
            # One connection: read the row, check it, compare-and-set. The read takes no lock;
            # the UPDATE's version condition is what makes the write safe.
            with self.am.db.transaction() as conn:
                current = self._select(conn, kind, key)
                if current is None:
                    raise NotFound(f"{kind} {key!r} not found")
                stale = expected_version is not None and current["version"] != expected_version
                record = None if stale else self._compare_and_set(conn, current, data, actor, machine, to)
            if stale:
                self.cache.store(to_record(current), generation)  # readers should see the newer one
                raise VersionConflict(
                    f"{kind} {key!r} is at version {current['version']}, not {expected_version}",
                    details={"expected_version": expected_version, "current_version": current["version"]},
                )
            if record is not None:
                change = "transition" if to is not None else "updated"
                self._after_change(change, record, current["state"], actor, generation)
                return record
            # Lost the race: the row is at a newer version than the one read.
            self.cache.newer_exists(kind, key, current["version"] + 1, generation)
            if expected_version is not None:
                raise VersionConflict(
                    f"{kind} {key!r} was changed concurrently (version {expected_version} is no longer current)",
                    details={"expected_version": expected_version},
                )
        raise VersionConflict(f"{kind} {key!r}: too much contention, gave up after {CAS_RETRIES} attempts")

    def _compare_and_set(
        self,
        conn: sa.Connection,
        current: Any,
        data: Mapping[str, Any] | None,
        actor: str | None,
        machine: Machine,
        to: str | None,
    ) -> dict[str, Any] | None:
        """Apply the change to the row ``current`` if it is still at its version; the new
        record, or None when another writer changed the row first."""
        if to is not None:
            machine.check_edge(current, to)
        merged = json.loads(current["data"])
        if data:
            merged.update(data)
        now = datetime.now(UTC)
        version = current["version"] + 1
        new_state = to if to is not None else current["state"]
        values = {"state": new_state, "data": dump_data(merged), "version": version, "updated_at": now}
        result = conn.execute(
            cas_update(self.records, current["kind"], current["record_key"], current["version"], **values)
        )
        if result.rowcount != 1:
            return None
        if to is not None:
            self._insert_history(
                conn, current["kind"], current["record_key"], version, current["state"], to, actor, now
            )
        return to_record({**current, **values, "data": merged})

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

    def _after_change(
        self, change: str, record: dict[str, Any], source: str | None, actor: str | None, generation: int
    ) -> None:
        kind = record["kind"]
        self.cache.changed(record, generation)
        event = {
            "kind": kind,
            "key": record["key"],
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
        self.am.hooks.trigger("state_changed", **event)

    # -- helpers -----------------------------------------------------------------------------
    def _select(self, conn: sa.Connection, kind: str, key: str) -> Any:
        return conn.execute(select_record(self.records, kind, key)).mappings().first()

    def health(self) -> dict[str, Any]:
        redis = self.am.redis
        report: dict[str, Any] = {
            "status": "healthy",
            "machines": sorted(self._machines),
            "cache": redis.backend,
            **self.cache.health(),
        }
        if redis.backend == "redis" and redis.breaker.is_open:
            report.update(status="degraded", fallback="cache bypassed; reads and writes go to the database")
        return report

    def dispose(self) -> None:
        if "cache" in vars(self):  # absent when init_app never ran
            self.cache.close()


def _key(key: str | int) -> str:
    text = str(key)
    if not text or len(text) > MAX_KEY_LENGTH:
        raise ValueError(f"state key must be 1..{MAX_KEY_LENGTH} characters")
    return text


__all__ = ["Machine", "StateDefinitionError", "StateManager"]
