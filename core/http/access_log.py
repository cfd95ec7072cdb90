"""One log line per request (SPEC §11): method, path, status, duration, request id, identity,
action. Written to the ``keel.access`` logger by the request pipeline
(:mod:`core.http.pipeline`), which checks ``logger.isEnabledFor(INFO)`` first;
``the request state`` is also what the metrics use.
"""

from __future__ import annotations

import logging
import sys
import time

from flask import Request, Response

_NAME = "keel.access"
logger = logging.getLogger(_NAME)


_FILE = __file__  # what findCaller reports: the code's file name


def log_request(req: Request, started: float | None, response: Response) -> None:
    """The line is logged at INFO: the caller checked ``logger.isEnabledFor(logging.INFO)``.

    What ``logger.info()`` does, without its stack walk (``findCaller``: a fifth of the cost of
    a line): the record names this function and line as its origin, as the walk would."""
    duration_ms = round((time.perf_counter() - started) * 1e3, 2) if started is not None else None
    status = response.status_code
    # The query string is left out: it may carry parameters marked secret.
    record = logger.makeRecord(
        _NAME,
        logging.INFO,
        _FILE,
        sys._getframe().f_lineno,
        "%s %s %s",
        (req.method, req.path, status),
        None,
        "log_request",
        {"status": status, "duration_ms": duration_ms},
    )
    logger.handle(record)
