"""One log line per request (SPEC §11): method, path, status, duration, request id, identity,
action. Written to the ``keel.access`` logger by the request pipeline
(:mod:`core.http.pipeline`), which checks ``logger.isEnabledFor(INFO)`` first;
``the request state`` is also what the metrics use.
"""

from __future__ import annotations

import logging
import time

from flask import Request, Response

logger = logging.getLogger("keel.access")


def log_request(req: Request, started: float | None, response: Response) -> None:
    duration_ms = round((time.perf_counter() - started) * 1e3, 2) if started is not None else None
    # The query string is left out: it may carry parameters marked secret.
    logger.info(
        "%s %s %s",
        req.method,
        req.path,
        response.status_code,
        extra={"status": response.status_code, "duration_ms": duration_ms},
    )
