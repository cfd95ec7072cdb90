"""DatabaseManager: SQLAlchemy Core engines and MongoDB (SPEC §10).

- ``db.sql`` — the engine for ``DATABASE_URL``: SQLite (default ``sqlite:///var/keel.db``,
  directory created), ``postgresql+psycopg2://``, ``oracle+oracledb://`` (thin mode; thick
  mode when ``ORACLE_CLIENT_LIB`` is set). Pools validate connections on checkout
  (pre-ping), have a size, an overflow and a checkout timeout (→ 503), and a statement
  timeout. ``db.sql_read`` is the engine for ``DATABASE_READ_URL`` (``db.sql`` without one).
- ``db.transaction()`` (a write transaction, never retried), ``db.read(fn)`` (an idempotent
  read, retried after a transient connection error) and ``db.connect()`` are how framework
  code reaches the database. Error translation, timeouts and the breaker live in the engine
  (:mod:`core.data.sql`), so they also cover code that uses ``db.sql`` directly: an outage is
  :class:`DatabaseUnavailable`, a cancelled statement :class:`StatementTimeout`, a busy pool
  :class:`PoolExhausted`, an open circuit :class:`~core.breaker.CircuitOpen` — all 503.
- ``db.metadata`` — where every manager and module declares its tables (in ``init_app`` /
  ``initialize``, without touching the database); the missing ones are created by
  ``db.create_all()``, which :meth:`DatabaseManager.start` runs (``DB_AUTO_CREATE``), as does
  ``flask db init``. So an app starts while its database is down (requests needing it answer
  503, ``/health`` is unhealthy).
- Portable tables (SQLite, PostgreSQL, Oracle): an autoincrement id is declared with
  ``sa.Identity()`` (Oracle gets no IDENTITY otherwise), a point in time is
  :func:`utc_timestamp` (or epoch numbers), every string has a length, and no column is named
  after an Oracle reserved word (``comment``, ``level``, ``size``, ``uid``, ``user``...).
- ``db.mongo`` — a pymongo ``Database`` for ``MONGODB_URL`` (``None`` when unset);
  ``db.mongo_call(fn, ...)`` runs a MongoDB call through its breaker.

Every connection attempt goes through the ``db`` circuit breaker (``db.breaker``; the replica
has ``db.read_breaker``, MongoDB ``db.mongo_breaker``). A background probe closes an open one
once the database answers again; :meth:`DatabaseManager.health` only reads them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import sqlalchemy as sa
from flask import Flask
from sqlalchemy.pool import QueuePool

from core.breaker import CircuitBreaker, CircuitOpen, Prober
from core.data.sql import (
    DatabaseUnavailable,
    PoolExhausted,
    StatementTimeout,
    create_engine,
    engine_health,
    install_psycogreen,
    ping,
    utc_timestamp,
)
from core.errors import ServiceUnavailable
from core.managers.base import Manager

if TYPE_CHECKING:
    from core.app_manager import AppManager


logger = logging.getLogger(__name__)

T = TypeVar("T")


class DatabaseManager(Manager):
    name: ClassVar[str] = "db"

    sql: sa.Engine
    sql_read: sa.Engine
    breaker: CircuitBreaker
    read_breaker: CircuitBreaker
    mongo_breaker: CircuitBreaker
    mongo_client: Any  # pymongo.MongoClient, or None without MONGODB_URL
    mongo: Any  # its pymongo Database, or None
    read_retries: int
    auto_create: bool

    def __init__(self) -> None:
        self.metadata = sa.MetaData()
        self._prober = Prober("db")
        self._closers: list[Callable[[], None]] = []  # engines and clients built by init_app

    # -- setup -------------------------------------------------------------------------------
    def init_app(self, app: Flask, am: AppManager) -> None:
        super().init_app(app, am)
        settings = am.settings
        self.read_retries = settings["DB_READ_RETRIES"]
        self.auto_create = bool(settings["DB_AUTO_CREATE"])
        install_psycogreen()
        self.breaker = self._breaker("db", (DatabaseUnavailable,), settings)
        self.sql = self._engine(settings["DATABASE_URL"], self.breaker, settings)
        if settings["DATABASE_READ_URL"]:
            self.read_breaker = self._breaker("db_read", (DatabaseUnavailable,), settings)
            self.sql_read = self._engine(settings["DATABASE_READ_URL"], self.read_breaker, settings)
        else:
            self.read_breaker, self.sql_read = self.breaker, self.sql
        self._init_mongo(settings)

    @staticmethod
    def _breaker(name: str, failures: tuple[type[BaseException], ...], settings: Any) -> CircuitBreaker:
        return CircuitBreaker(
            name,
            failures=failures,
            threshold=settings["BREAKER_THRESHOLD"],
            probe_interval=settings["BREAKER_PROBE_INTERVAL"],
        )

    def _engine(self, url: str, breaker: CircuitBreaker, settings: Any) -> sa.Engine:
        engine = create_engine(url, settings, breaker)
        self._closers.append(engine.dispose)
        self._prober.add(breaker, lambda: ping(engine))
        return engine

    def _init_mongo(self, settings: Any) -> None:
        self.mongo_client, self.mongo = None, None
        if not settings["MONGODB_URL"]:
            # Never called (mongo_call refuses first); pymongo is not even imported.
            self.mongo_breaker = self._breaker("mongo", (), settings)
            return
        import pymongo
        from pymongo.errors import ConnectionFailure

        self.mongo_breaker = self._breaker("mongo", (ConnectionFailure,), settings)
        ms = int(settings["MONGODB_TIMEOUT"] * 1000)
        self.mongo_client = pymongo.MongoClient(
            settings["MONGODB_URL"],
            serverSelectionTimeoutMS=ms,
            connectTimeoutMS=ms,
            socketTimeoutMS=ms,
            appname="keel",
        )
        self._closers.append(self.mongo_client.close)
        self.mongo = self.mongo_client.get_default_database("keel")
        self._prober.add(self.mongo_breaker, lambda: self.mongo_call(self.mongo.command, "ping"))

    # -- use ---------------------------------------------------------------------------------
    @property
    def engine(self) -> sa.Engine:
        """The primary engine (``db.sql``)."""
        return self.sql

    @contextmanager
    def connect(self) -> Iterator[sa.Connection]:
        """A connection on the primary (autobegin; commit yourself or use :meth:`transaction`)."""
        with self.sql.connect() as conn:
            yield conn

    @contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        """A write transaction on the primary: committed on success, rolled back on error.

        Never retried: a write whose outcome is unknown must not be repeated blindly.
        """
        with self.sql.begin() as conn:
            yield conn

    def read(self, fn: Callable[[sa.Connection], T], *, replica: bool = False) -> T:
        """Run the idempotent read ``fn(connection)``, retrying transient connection errors.

        ``replica=True`` reads from ``DATABASE_READ_URL`` (falls back to the primary while the
        replica is down). Retries: ``DB_READ_RETRIES`` with a short backoff; an open circuit
        or an exhausted pool is not retried (the answer would not change in milliseconds).
        """
        attempt = 0
        while True:
            engine = self.sql_read if replica else self.sql
            replica_down = self.read_breaker.is_open and not self.read_breaker.probe_due
            if engine is not self.sql and replica_down and not self.breaker.is_open:
                engine = self.sql  # the replica's circuit is open: read from the primary
            try:
                with engine.connect() as conn:
                    return fn(conn)
            except CircuitOpen:
                raise
            except DatabaseUnavailable:
                if attempt >= self.read_retries:
                    raise
                attempt += 1
                time.sleep(0.05 * 2**attempt)

    def mongo_call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a MongoDB call through the ``mongo`` breaker; unreachable → 503."""
        from pymongo.errors import ConnectionFailure

        if self.mongo is None:
            raise ServiceUnavailable("MongoDB is not configured (MONGODB_URL).")
        try:
            return self.mongo_breaker.call(fn, *args, **kwargs)
        except ConnectionFailure as exc:
            raise ServiceUnavailable("MongoDB is unavailable.", retry_after=1) from exc

    # -- tables ------------------------------------------------------------------------------
    def create_all(self, tables: list[sa.Table] | None = None) -> list[str]:
        """Create the missing tables of ``db.metadata`` (or of ``tables``); returns their names.

        Safe when several workers start at once: on PostgreSQL an advisory lock serialises
        them; elsewhere a lost creation race is retried (the tables then exist).
        """
        engine = self.sql
        before = set(sa.inspect(engine).get_table_names())
        attempts = 5
        for attempt in range(1, attempts + 1):
            try:
                with engine.begin() as conn:
                    if engine.dialect.name == "postgresql":
                        conn.execute(sa.text("SELECT pg_advisory_xact_lock(7314150)"))
                    self.metadata.create_all(conn, tables=tables, checkfirst=True)
                break
            except (sa.exc.ProgrammingError, sa.exc.IntegrityError, sa.exc.OperationalError):
                # Another worker created a table between our check and our CREATE.
                if attempt == attempts:
                    raise
                time.sleep(0.05 * attempt)
        after = set(sa.inspect(engine).get_table_names())
        return sorted(after - before)

    def start(self) -> None:
        """Start the background probe of the breakers, then create the missing tables
        (``DB_AUTO_CREATE``; every manager and module declared theirs). A database that is
        down is logged, not fatal."""
        self._prober.start()
        if not self.auto_create:
            return
        try:
            created = self.create_all()
        except ServiceUnavailable as exc:
            logger.error("database unavailable at start (%s); tables not checked — run `flask db init`", exc)
            return
        if created:
            logger.info("created tables: %s", ", ".join(created))

    # -- health ------------------------------------------------------------------------------
    def pool_status(self) -> dict[str, int]:
        pool = self.sql.pool
        if isinstance(pool, QueuePool):
            return {"size": pool.size(), "checked_out": pool.checkedout(), "overflow": max(0, pool.overflow())}
        return {}

    def health(self) -> dict[str, Any]:
        """Reads the breakers; pings only closed circuits, without reporting to them."""
        report: dict[str, Any] = {"backend": self.sql.dialect.name, "breaker": self.breaker.health()}
        report.update(engine_health(self.sql, self.breaker))
        report["pool"] = self.pool_status()
        if self.sql_read is not self.sql:
            report["read_replica"] = engine_health(self.sql_read, self.read_breaker)
            if report["read_replica"]["status"] != "healthy" and report["status"] == "healthy":
                report.update(status="degraded", fallback="reads from the primary")
        if self.mongo is not None:
            report["mongo"] = self._mongo_health()
            if report["mongo"]["status"] != "healthy" and report["status"] == "healthy":
                report["status"] = "degraded"
        return report

    def _mongo_health(self) -> dict[str, Any]:
        from pymongo.errors import ConnectionFailure

        breaker = self.mongo_breaker
        if breaker.is_open:
            return {"status": "unhealthy", "error": CircuitOpen.__name__, "breaker": breaker.health()}
        started = time.perf_counter()
        try:
            self.mongo.command("ping")  # outside the breaker: health never changes it
        except ConnectionFailure:
            return {"status": "unhealthy", "error": ServiceUnavailable.__name__, "breaker": breaker.health()}
        return {"status": "healthy", "latency_ms": round((time.perf_counter() - started) * 1e3, 2)}

    def dispose(self) -> None:
        """Stop the probe, close MongoDB, dispose the engines (idempotent)."""
        self._prober.stop()
        while self._closers:
            self._closers.pop()()


__all__ = [
    "DatabaseManager",
    "DatabaseUnavailable",
    "PoolExhausted",
    "StatementTimeout",
    "install_psycogreen",
    "utc_timestamp",
]
