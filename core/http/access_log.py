"""One log line per request (SPEC §11): method, path, status, duration, request id, identity,
action. Written to the ``keel.access`` logger; ``g.keel_started`` is also what the metrics use.
"""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, request

logger = logging.getLogger("keel.access")


def install(app: Flask) -> None:
    @app.before_request
    def _start_timer() -> None:
        g.keel_started = time.perf_counter()

    @app.after_request
    def _log_request(response: Response) -> Response:
        if logger.isEnabledFor(logging.INFO):
            started = g.get("keel_started")
            duration_ms = round((time.perf_counter() - started) * 1e3, 2) if started is not None else None
            # The query string is left out: it may carry parameters marked secret.
            logger.info(
                "%s %s %s",
                request.method,
                request.path,
                response.status_code,
                extra={"status": response.status_code, "duration_ms": duration_ms},
            )
        return response
