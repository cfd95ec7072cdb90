"""One log line per request (SPEC §11): method, path, status, duration, request id, identity,
action. Written to the ``keel.access`` logger by the request pipeline
(:mod:`core.http.pipeline`), which checks ``logger.isEnabledFor(INFO)`` first;
``the request state`` is also what the metrics use.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from flask import Request, Response

from core.logs import own_handlers, redact, write_own

_NAME = "keel.access"
logger = logging.getLogger(_NAME)


_FILE = __file__  # what findCaller reports: the code's file name


def log_request(req: Request, started: float | None, response: Response, state: Any = None) -> None:
    """The line is logged at INFO: the caller checked ``logger.isEnabledFor(logging.INFO)``.

    ``state``: the request's :class:`~core.http.state.RequestState`. With it, and the logging
    configuration Keel's own (:func:`core.logs.own_handlers`), the line is written straight to
    Keel's handlers: the same line, without the ``LogRecord`` (its pid, thread and process
    names), the handler filters and the record's redaction pass (two thirds of the cost).
    Otherwise what ``logger.info()`` does, without its stack walk (``findCaller``): the record
    names this function and line as its origin, as the walk would."""
    duration_ms = round((time.perf_counter() - started) * 1e3, 2) if started is not None else None
    status = response.status_code
    # The query string is left out: it may carry parameters marked secret.
    args = (req.method, req.path, status)
    extra = {"status": status, "duration_ms": duration_ms}
    if state is not None:
        handlers = own_handlers(logger)
        if handlers is not None:
            # the record's fields in its order: extra=, then RequestContextFilter's
            fields = (
                ("status", status),
                ("duration_ms", duration_ms),
                ("request_id", state.request_id),
                ("identity", state.identity),
                ("action", state.action),
                ("client_ip", state.client_ip),
            )
            message = redact("%s %s %s" % args)  # noqa: UP031 - what getMessage() does
            write_own(handlers, _NAME, message, fields, lambda: _record(args, extra, handlers))
            return
    logger.handle(_record(args, extra, ()))


def _record(args: tuple[Any, ...], extra: dict[str, Any], handlers: Any) -> logging.LogRecord:
    """The record ``logger.info()`` from :func:`log_request` makes (then, for a failed direct
    write, passed through the handlers' filters as ``handle()`` would have)."""
    line = sys._getframe(1).f_lineno  # the line in log_request (or its lambda) asking for the record
    record = logger.makeRecord(_NAME, logging.INFO, _FILE, line, "%s %s %s", args, None, "log_request", extra)
    for handler in handlers:
        handler.filter(record)
    return record
