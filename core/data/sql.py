"""SQLAlchemy engines wired to a circuit breaker (SPEC §10), and the errors an outage becomes.

:func:`create_engine` builds the engine for one URL (SQLite, PostgreSQL, Oracle) with its pool,
connect and statement timeouts, and installs the events that make it the one place where
database errors are translated and the breaker is driven, for every user of the engine:

- a new connection is refused at once while the breaker is open (one probe per interval);
- a dropped connection or a failed connect is :class:`DatabaseUnavailable` (and a failure for
  the breaker), a cancelled statement :class:`StatementTimeout`, a pool checkout that timed out
  :class:`PoolExhausted` — all 503 ``service_unavailable`` instead of driver errors.

Inside :func:`unobserved` (health checks) connections neither take the probe nor report to
the breaker, so that reading the health never changes it.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import oracle
from sqlalchemy.pool import QueuePool

from core.breaker import CircuitBreaker, CircuitOpen
from core.errors import KeelError, ServiceUnavailable


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


# True while a health check connects: the breaker is read, never changed.
_UNOBSERVED: ContextVar[bool] = ContextVar("keel_db_unobserved", default=False)


@contextmanager
def unobserved() -> Iterator[None]:
    """Connections made inside do not take the breaker's probe nor report to it."""
    token = _UNOBSERVED.set(True)
    try:
        yield
    finally:
        _UNOBSERVED.reset(token)


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
    if getattr(exc, "pgcode", None) == "57014":  # query_canceled (statement_timeout)
        return True
    if isinstance(exc, sqlite3.OperationalError):
        # SQLite has no statement timeout: its lock wait (the ``timeout`` connect argument,
        # ``DB_STATEMENT_TIMEOUT_MS`` or at least 5 s) ran out.
        return "database is locked" in str(exc)
    # python-oracledb: DPI-1067 / DPY-4024 call timeout exceeded
    text = str(exc)
    return "DPY-4024" in text or "DPI-1067" in text


def install_psycogreen() -> bool:
    """Make psycopg2 cooperative when gevent has patched the socket module.

    Called before an engine is created; gunicorn's ``post_fork`` may call it too. Returns
    True when the wait callback was installed.
    """
    gevent_monkey = sys.modules.get("gevent.monkey")
    if gevent_monkey is None or not gevent_monkey.is_module_patched("socket"):
        return False
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()
    return True


# The drivers Keel installs, for URLs that name none (or an alias): SQLAlchemy 2.1 maps a bare
# `postgresql://` to psycopg 3 and refuses `postgres://` (what Heroku-style platforms write).
_DEFAULT_DRIVERS = {"postgresql": "postgresql+psycopg2", "postgres": "postgresql+psycopg2", "oracle": "oracle+oracledb"}


def database_url(raw_url: str) -> sa.URL:
    """``raw_url`` parsed, with the installed driver filled in where the URL names none."""
    scheme, sep, rest = raw_url.partition("://")
    if sep and scheme.lower() in _DEFAULT_DRIVERS:
        raw_url = f"{_DEFAULT_DRIVERS[scheme.lower()]}://{rest}"
    return sa.make_url(raw_url)


def create_engine(raw_url: str, settings: Mapping[str, Any], breaker: CircuitBreaker) -> sa.Engine:
    """The engine for ``raw_url``: pool, timeouts, error translation and ``breaker`` wired in."""
    url = database_url(raw_url)
    backend = url.get_backend_name()
    memory = backend == "sqlite" and url.database in (None, "", ":memory:")
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if not memory:
        kwargs.update(
            poolclass=_KeelQueuePool,
            pool_size=settings["DB_POOL_SIZE"],
            max_overflow=settings["DB_MAX_OVERFLOW"],
            pool_timeout=settings["DB_POOL_TIMEOUT"],
            pool_recycle=1800,
        )
    if backend == "sqlite" and not memory:
        Path(str(url.database)).parent.mkdir(parents=True, exist_ok=True)
    if backend == "oracle" and settings["ORACLE_CLIENT_LIB"]:
        kwargs["thick_mode"] = {"lib_dir": settings["ORACLE_CLIENT_LIB"]}
    engine = sa.create_engine(url, connect_args=_connect_args(url, settings), **kwargs)
    _instrument(engine, breaker, settings["DB_STATEMENT_TIMEOUT_MS"], wal=not memory)
    return engine


def _connect_args(url: sa.URL, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The driver's connect and statement timeouts for this backend."""
    backend = url.get_backend_name()
    timeout_ms = settings["DB_STATEMENT_TIMEOUT_MS"]
    connect_timeout = settings["DB_CONNECT_TIMEOUT"]
    if backend == "sqlite":
        # SQLite has no statement timeout; this is how long a writer waits for the lock.
        return {"timeout": max(5.0, timeout_ms / 1000), "check_same_thread": False}
    args: dict[str, Any] = {}
    if backend == "postgresql":
        args["connect_timeout"] = max(1, math.ceil(connect_timeout))
        if "application_name" not in url.query:
            args["application_name"] = "keel"
        if timeout_ms:
            args["options"] = f"-c statement_timeout={int(timeout_ms)}"
    elif backend == "oracle":
        args["tcp_connect_timeout"] = connect_timeout
    return args


def _instrument(engine: sa.Engine, breaker: CircuitBreaker, timeout_ms: int, wal: bool) -> None:
    events = _BreakerEvents(breaker, engine.dialect.name, timeout_ms, wal)
    event.listen(engine, "do_connect", events.gate)
    event.listen(engine, "connect", events.connected)
    event.listen(engine, "checkout", events.checked_out)
    event.listen(engine, "handle_error", events.translate)


class _BreakerEvents:
    """The engine events that drive ``breaker`` and translate driver errors."""

    def __init__(self, breaker: CircuitBreaker, backend: str, timeout_ms: int, wal: bool) -> None:
        self.breaker = breaker
        self.backend = backend
        self.timeout_ms = timeout_ms
        self.wal = wal

    def gate(self, _dialect: Any, _conn_rec: Any, _cargs: Any, _cparams: Any) -> None:
        """Before a new connection: fail fast while the circuit is open (one probe per interval)."""
        if not _UNOBSERVED.get():
            self.breaker.check()
        elif self.breaker.is_open:
            raise CircuitOpen(self.breaker.name, retry_after=max(1, round(self.breaker.probe_interval)))

    def connected(self, dbapi_conn: Any, _conn_rec: Any) -> None:
        if not _UNOBSERVED.get():
            self.breaker.success()
        if self.backend == "sqlite":
            _sqlite_pragmas(dbapi_conn, self.wal)
        elif self.backend == "oracle" and self.timeout_ms:
            dbapi_conn.call_timeout = int(self.timeout_ms)

    def checked_out(self, _dbapi_conn: Any, _conn_rec: Any, _proxy: Any) -> None:
        if not _UNOBSERVED.get():
            self.breaker.success()  # the pre-ping answered

    def translate(self, ctx: Any) -> None:
        original = ctx.original_exception
        if ctx.is_pre_ping or isinstance(original, KeelError):
            return  # the pool reconnects after a failed ping; our own errors pass as they are
        if _is_statement_timeout(original):
            raise StatementTimeout("The database did not answer in time.", retry_after=1) from original
        if ctx.is_disconnect or ctx.connection is None:
            error = DatabaseUnavailable("The database is unavailable.", retry_after=1)
            if not _UNOBSERVED.get():
                self.breaker.failure(error)
            raise error from original


def _sqlite_pragmas(dbapi_conn: Any, wal: bool) -> None:
    cursor = dbapi_conn.cursor()
    if wal:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def ping(engine: sa.Engine) -> float:
    """``SELECT 1`` on a pooled connection; the round trip in ms (raises ServiceUnavailable)."""
    started = time.perf_counter()
    with engine.connect() as conn:
        conn.execute(sa.select(sa.literal(1)))
    return round((time.perf_counter() - started) * 1e3, 2)


def engine_health(engine: sa.Engine, breaker: CircuitBreaker) -> dict[str, Any]:
    """The health of one engine without changing its breaker: an open circuit is reported as
    it is, a closed one is pinged :func:`unobserved`."""
    if breaker.is_open:
        return {"status": "unhealthy", "error": CircuitOpen.__name__}
    try:
        with unobserved():
            return {"status": "healthy", "latency_ms": ping(engine)}
    except ServiceUnavailable as exc:
        return {"status": "unhealthy", "error": type(exc).__name__}


__all__ = [
    "DatabaseUnavailable",
    "PoolExhausted",
    "StatementTimeout",
    "create_engine",
    "engine_health",
    "install_psycogreen",
    "ping",
    "unobserved",
    "utc_timestamp",
]
