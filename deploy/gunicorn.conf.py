"""Gunicorn configuration: ``gunicorn -c deploy/gunicorn.conf.py app:app`` (SPEC §1, §12).

- gevent workers (Flask-SocketIO's gevent mode; WebSocket through simple-websocket), one per CPU
  by default. Several workers share the listening socket and the kernel hands each new
  connection to one of them: a Socket.IO client on the WebSocket transport (the default: Keel
  accepts no long-polling unless ``WS_LONG_POLLING=true``) lives on one TCP connection, so it
  needs no stickiness; rooms, presence, limits and bans are in Redis and emits cross workers
  through ``SOCKETIO_MESSAGE_QUEUE`` (default ``REDIS_URL``). Hence the default:
  ``GUNICORN_WORKERS`` = the CPUs this process may use, when ``REDIS_URL`` is given (in the
  environment or as a secret file); ONE worker without it (workers would not share rooms) or
  with ``WS_LONG_POLLING=true`` (a long-polling session is a series of HTTP requests that must
  all reach the worker holding it, and gunicorn cannot route by session: several instances
  then need sticky sessions at the load balancer).
- each worker builds its own app (no ``preload_app``): connections, Vault token renewal and
  other background threads belong to the process that uses them.
- psycopg2 is made cooperative under gevent (psycogreen) in ``post_fork``.
- SIGTERM: gunicorn stops accepting, lets requests finish for ``graceful_timeout`` seconds, and
  ``worker_exit`` disposes the app's managers in reverse order (modules first).
- Prometheus multi-process mode: every worker writes its metrics to ``PROMETHEUS_MULTIPROC_DIR``
  (a fresh directory unless one is given), a dead worker's live gauges are dropped.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from typing import Any

_log = logging.getLogger("keel.gunicorn")

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8080')}"
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gevent")


def _has_secret(key: str) -> bool:
    """``key`` is given in the environment or as a secret file (SECRETS_DIR, ./secrets, /run/secrets)."""
    if os.environ.get(key.upper()):
        return True
    dirs = [os.environ.get("SECRETS_DIR") or "secrets", "/run/secrets"]
    return any(os.path.isfile(os.path.join(d, key.lower())) for d in dirs)


def default_workers() -> int:
    """One per CPU this process may use; one without Redis or with long-polling (see above)."""
    long_polling = os.environ.get("WS_LONG_POLLING", "").strip().lower() in ("1", "true", "yes", "on")
    if long_polling or not (_has_secret("REDIS_URL") or _has_secret("SOCKETIO_MESSAGE_QUEUE")):
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


workers = int(os.environ.get("GUNICORN_WORKERS") or default_workers())
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "1000"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "20"))
keepalive = 5
preload_app = False
accesslog = None  # Keel logs every request itself, with its request id
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
# gunicorn ≥ 25 opens a control socket under $HOME; not needed, and HOME is read-only in k8s.
control_socket_disable = True
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")

if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="keel-metrics-")
_metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]


def on_starting(server: Any) -> None:
    """Start with an empty metrics directory (values of a previous run would be summed in)."""
    os.makedirs(_metrics_dir, exist_ok=True)
    if workers > 1 and os.environ.get("WS_LONG_POLLING", "").strip().lower() in ("1", "true", "yes", "on"):
        _log.warning(
            "WS_LONG_POLLING=true with %d workers: a long-polling Socket.IO session must stay on one "
            "worker and gunicorn cannot route by session; use GUNICORN_WORKERS=1 (and sticky sessions)",
            workers,
        )
    for entry in os.listdir(_metrics_dir):
        if entry.endswith(".db"):
            os.remove(os.path.join(_metrics_dir, entry))


def post_fork(server: Any, worker: Any) -> None:
    if "gevent" in worker_class:
        from psycogreen.gevent import patch_psycopg

        patch_psycopg()


def post_worker_init(worker: Any) -> None:
    """The app is built: move its long-lived objects out of the garbage collector's sight, so
    that a full collection (e.g. during an action reload) stays short."""
    import gc

    gc.collect()
    gc.freeze()


def _dispose(app: Any, where: str) -> None:
    keel = getattr(app, "extensions", {}).get("keel")
    if keel is not None:
        keel.dispose()
        _log.info("keel disposed (%s)", where)


def worker_exit(server: Any, worker: Any) -> None:
    """In the worker, after it stopped serving (SIGTERM/SIGQUIT/max requests): dispose the app."""
    _dispose(getattr(worker, "wsgi", None), f"worker {worker.pid}")


def on_exit(server: Any) -> None:
    """In the master: dispose an app it loaded itself (only with preload_app), clean metrics."""
    _dispose(getattr(server.app, "callable", None), "master")
    if _metrics_dir.startswith(tempfile.gettempdir()) and os.path.basename(_metrics_dir).startswith("keel-metrics-"):
        shutil.rmtree(_metrics_dir, ignore_errors=True)


def child_exit(server: Any, worker: Any) -> None:
    """A worker died: drop its live gauges from the multi-process metrics."""
    try:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
    except ImportError:  # metrics are optional
        pass
