"""DatabaseManager: SQLAlchemy Core engines and MongoDB (SPEC §10).

- ``db.sql`` — the engine for ``DATABASE_URL``: SQLite (default ``sqlite:///var/keel.db``,
  directory created), ``postgresql+psycopg2://``, ``oracle+oracledb://`` (thin mode; thick
  mode when ``ORACLE_CLIENT_LIB`` is set). Pools validate connections on checkout
  (pre-ping), have a size, an overflow and a checkout timeout (→ 503), and a statement
  timeout. ``db.sql_read`` is the engine for ``DATABASE_READ_URL`` (``db.sql`` without one).
- ``db.metadata`` — where every manager and module declares its tables (in ``init_app`` /
  ``initialize``, without touching the database); the missing ones are created by
  ``db.create_all()``, which runs once at ``app_started`` (``DB_AUTO_CREATE``) and in
  ``flask db init``. No manager creates its own tables, so an app starts while its database
  is down (requests needing it answer 503, ``/health`` is unhealthy).
- Portable tables (SQLite, PostgreSQL, Oracle): an autoincrement id is declared with
  ``sa.Identity()`` (Oracle gets no IDENTITY otherwise), a point in time is
  :func:`utc_timestamp` (or epoch numbers), every string has a length, and no column is named
  after an Oracle reserved word (``comment``, ``level``, ``size``, ``uid``, ``user``...).
- ``db.read(fn)`` runs ``fn(connection)`` and retries it after a transient connection error
  (idempotent reads only); ``db.transaction()`` is a write transaction, never retried.
- ``db.mongo`` — a pymongo ``Database`` for ``MONGODB_URL`` (``None`` when unset);
  ``db.mongo_call(fn, ...)`` runs a MongoDB call through its breaker.

Every connection attempt goes through the ``db`` circuit breaker (``db.breaker``): connection
errors anywhere (including code that uses ``db.sql`` directly) count against it, an open
circuit refuses new connections at once, and a lost connection surfaces as
:class:`DatabaseUnavailable` (503) rather than a driver error.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import sqlalchemy as sa
from flask import Flask
from sqlalchemy import event
from sqlalchemy.dialects import oracle
from sqlalchemy.pool import QueuePool

from core.breaker import CircuitBreaker, CircuitOpen
from core.errors import KeelError, ServiceUnavailable
from core.managers.base import Manager

if TYPE_CHECKING:
    from core.app_manager import AppManager


logger = logging.getLogger(__name__)

T = TypeVar("T")


def utc_timestamp() -> sa.types.TypeEngine[Any]:
    """A timezone-aware timestamp everywhere (Oracle's plain DateTime would be a DATE: no
    fractions of a second, no zone)."""
    return sa.DateTime(timezone=True).with_variant(oracle.TIMESTAMP(timezone=True), "oracle")


class DatabaseUnavailable(ServiceUnavailable):
    """The database cannot be reached or dropped the connection (transient; 503)."""


class PoolExhausted(ServiceUnavailable):
    """No pooled connection became free within ``DB_POOL_TIMEOUT`` (503)."""


class StatementTimeout(ServiceUnavailable):
    """A statement ran longer than ``DB_STATEMENT_TIMEOUT_MS`` and was cancelled (503)."""


# SQLAlchemy names a pool's logger after its class; keep our subclass as quiet as QueuePool's.
logging.getLogger(f"{__name__}._KeelQueuePool").setLevel(logging.WARNING)


class _KeelQueuePool(QueuePool):
    """A QueuePool whose checkout timeout is a 503 ``PoolExhausted`` instead of a 500."""

    def connect(self) -> Any:
        try:
            return super().connect()
        except sa.exc.TimeoutError as exc:
            raise PoolExhausted("The database is busy; retry shortly.", retry_after=1) from exc


def _is_statement_timeout(exc: BaseException | None) -> bool:
    if exc is None:
        return False
    pgcode = getattr(exc, "pgcode", None)
    if pgcode == "57014":  # query_canceled (statement_timeout)
        return True
    # python-oracledb: DPI-1067 / DPY-4024 call timeout exceeded
    text = str(exc)
    return "DPY-4024" in text or "DPI-1067" in text


def install_psycogreen() -> bool:
    """Make psycopg2 cooperative when gevent has patched the socket module.

    Called by :class:`DatabaseManager` before it creates an engine; gunicorn's ``post_fork``
    may call it too. Returns True when the wait callback was installed.
    """
    gevent_monkey = sys.modules.get("gevent.monkey")
    if gevent_monkey is None or not gevent_monkey.is_module_patched("socket"):
        return False
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()
    return True


class DatabaseManager(Manager):
    name: ClassVar[str] = "db"

    def __init__(self) -> None:
        self.metadata = sa.MetaData()
        self.sql: sa.Engine | None = None
        self.sql_read: sa.Engine | None = None
        self.mongo: Any = None
        self.mongo_client: Any = None
        self.breaker = CircuitBreaker("db")
        self.read_breaker = self.breaker
        self.mongo_breaker = CircuitBreaker("mongo")
        self.read_retries = 2
        self.auto_create = False

    # -- setup -------------------------------------------------------------------------------
    def init_app(self, app: Flask, am: AppManager) -> None:
        super().init_app(app, am)
        settings = am.settings
        threshold, interval = settings["BREAKER_THRESHOLD"], settings["BREAKER_PROBE_INTERVAL"]
        self.read_retries = settings["DB_READ_RETRIES"]
        install_psycogreen()
        self.breaker = CircuitBreaker(
            "db", failures=(DatabaseUnavailable,), threshold=threshold, probe_interval=interval
        )
        self.sql = self._engine(settings["DATABASE_URL"], settings, self.breaker)
        if settings["DATABASE_READ_URL"]:
            self.read_breaker = CircuitBreaker(
                "db_read", failures=(DatabaseUnavailable,), threshold=threshold, probe_interval=interval
            )
            self.sql_read = self._engine(settings["DATABASE_READ_URL"], settings, self.read_breaker)
        else:
            self.read_breaker = self.breaker
            self.sql_read = self.sql
        if settings["MONGODB_URL"]:
            self._init_mongo(settings["MONGODB_URL"], settings["MONGODB_TIMEOUT"], threshold, interval)
        self.auto_create = bool(settings["DB_AUTO_CREATE"])

    def _engine(self, raw_url: str, settings: Any, breaker: CircuitBreaker) -> sa.Engine:
        url = sa.make_url(raw_url)
        backend = url.get_backend_name()
        timeout_ms = settings["DB_STATEMENT_TIMEOUT_MS"]
        connect_timeout = settings["DB_CONNECT_TIMEOUT"]
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        connect_args: dict[str, Any] = {}
        memory = backend == "sqlite" and url.database in (None, "", ":memory:")
        if not memory:
            kwargs.update(
                poolclass=_KeelQueuePool,
                pool_size=settings["DB_POOL_SIZE"],
                max_overflow=settings["DB_MAX_OVERFLOW"],
                pool_timeout=settings["DB_POOL_TIMEOUT"],
                pool_recycle=1800,
            )
        if backend == "sqlite":
            if not memory:
                Path(str(url.database)).parent.mkdir(parents=True, exist_ok=True)
            # SQLite has no statement timeout; this is how long a writer waits for the lock.
            connect_args["timeout"] = max(5.0, timeout_ms / 1000)
            connect_args["check_same_thread"] = False
        elif backend == "postgresql":
            connect_args["connect_timeout"] = max(1, math.ceil(connect_timeout))
            if "application_name" not in url.query:
                connect_args["application_name"] = "keel"
            if timeout_ms:
                connect_args["options"] = f"-c statement_timeout={int(timeout_ms)}"
        elif backend == "oracle":
            connect_args["tcp_connect_timeout"] = connect_timeout
            if settings["ORACLE_CLIENT_LIB"]:
                kwargs["thick_mode"] = {"lib_dir": settings["ORACLE_CLIENT_LIB"]}
        engine = sa.create_engine(url, connect_args=connect_args, **kwargs)
        self._instrument(engine, breaker, backend, timeout_ms, wal=not memory)
        return engine

    @staticmethod
    def _instrument(engine: sa.Engine, breaker: CircuitBreaker, backend: str, timeout_ms: int, wal: bool) -> None:
        @event.listens_for(engine, "do_connect")
        def _gate(dialect: Any, conn_rec: Any, cargs: Any, cparams: Any) -> None:
            # Fail fast while the circuit is open; one probe per interval goes through.
            breaker.check()

        @event.listens_for(engine, "connect")
        def _connected(dbapi_conn: Any, conn_rec: Any) -> None:
            breaker.success()
            if backend == "sqlite":
                cursor = dbapi_conn.cursor()
                if wal:
                    cursor.execute("PRAGMA journal_mode=WAL")
                    cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.close()
            elif backend == "oracle" and timeout_ms:
                dbapi_conn.call_timeout = int(timeout_ms)

        @event.listens_for(engine, "checkout")
        def _checked_out(dbapi_conn: Any, conn_rec: Any, proxy: Any) -> None:
            breaker.success()  # the pre-ping answered

        @event.listens_for(engine, "handle_error")
        def _translate(ctx: Any) -> None:
            original = ctx.original_exception
            if ctx.is_pre_ping or isinstance(original, KeelError):
                return  # the pool reconnects after a failed ping; our own errors pass as they are
            if _is_statement_timeout(original):
                raise StatementTimeout("The database did not answer in time.", retry_after=1) from original
            if ctx.is_disconnect or ctx.connection is None:
                error = DatabaseUnavailable("The database is unavailable.", retry_after=1)
                breaker.failure(error)
                raise error from original

    def _init_mongo(self, url: str, timeout: float, threshold: int, interval: float) -> None:
        import pymongo
        from pymongo.errors import ConnectionFailure

        ms = int(timeout * 1000)
        self.mongo_client = pymongo.MongoClient(
            url,
            serverSelectionTimeoutMS=ms,
            connectTimeoutMS=ms,
            socketTimeoutMS=ms,
            appname="keel",
        )
        self.mongo = self.mongo_client.get_default_database("keel")
        self.mongo_breaker = CircuitBreaker(
            "mongo", failures=(ConnectionFailure,), threshold=threshold, probe_interval=interval
        )

    # -- use ---------------------------------------------------------------------------------
    @property
    def engine(self) -> sa.Engine:
        assert self.sql is not None, "DatabaseManager is not initialised"
        return self.sql

    @contextmanager
    def connect(self) -> Iterator[sa.Connection]:
        """A connection on the primary (autobegin; commit yourself or use :meth:`transaction`)."""
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        """A write transaction on the primary: committed on success, rolled back on error.

        Never retried: a write whose outcome is unknown must not be repeated blindly.
        """
        with self.engine.begin() as conn:
            yield conn

    def read(self, fn: Callable[[sa.Connection], T], *, replica: bool = False) -> T:
        """Run the idempotent read ``fn(connection)``, retrying transient connection errors.

        ``replica=True`` reads from ``DATABASE_READ_URL`` (falls back to the primary while the
        replica is down). Retries: ``DB_READ_RETRIES`` with a short backoff; an open circuit
        or an exhausted pool is not retried (the answer would not change in milliseconds).
        """
        attempt = 0
        while True:
            engine = self.sql_read if replica and self.sql_read is not None else self.engine
            replica_down = self.read_breaker.is_open and not self.read_breaker.probe_due
            if engine is not self.sql and replica_down and not self.breaker.is_open:
                engine = self.engine  # the replica's circuit is open: read from the primary
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
        engine = self.engine
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
        """Create the missing tables (``DB_AUTO_CREATE``); every manager and module declared
        theirs in ``init_app``. A database that is down is logged, not fatal."""
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
        pool = self.engine.pool
        if isinstance(pool, QueuePool):
            return {"size": pool.size(), "checked_out": pool.checkedout(), "overflow": max(0, pool.overflow())}
        return {}

    def _ping(self, engine: sa.Engine) -> float:
        started = time.perf_counter()
        with engine.connect() as conn:
            conn.execute(sa.select(sa.literal(1)))
        return round((time.perf_counter() - started) * 1e3, 2)

    def health(self) -> dict[str, Any]:
        report: dict[str, Any] = {"backend": self.engine.dialect.name, "breaker": self.breaker.health()}
        try:
            report["latency_ms"] = self._ping(self.engine)
            report["status"] = "healthy"
        except ServiceUnavailable as exc:
            report.update(status="unhealthy", error=type(exc).__name__)
        report["pool"] = self.pool_status()
        if self.sql_read is not None and self.sql_read is not self.sql:
            try:
                report["read_replica"] = {"status": "healthy", "latency_ms": self._ping(self.sql_read)}
            except ServiceUnavailable as exc:
                report["read_replica"] = {"status": "unhealthy", "error": type(exc).__name__}
                if report["status"] == "healthy":
                    report.update(status="degraded", fallback="reads from the primary")
        if self.mongo is not None:
            report["mongo"] = self._mongo_health()
            if report["mongo"]["status"] != "healthy" and report["status"] == "healthy":
                report["status"] = "degraded"
        return report

    def _mongo_health(self) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            self.mongo_call(self.mongo.command, "ping")
        except ServiceUnavailable as exc:
            return {"status": "unhealthy", "error": type(exc).__name__, "breaker": self.mongo_breaker.health()}
        return {"status": "healthy", "latency_ms": round((time.perf_counter() - started) * 1e3, 2)}

    def dispose(self) -> None:
        if self.sql_read is not None and self.sql_read is not self.sql:
            self.sql_read.dispose()
        if self.sql is not None:
            self.sql.dispose()
        if self.mongo_client is not None:
            self.mongo_client.close()
