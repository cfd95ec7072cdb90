"""The container's HEALTHCHECK: ``python deploy/healthcheck.py`` exits 0 when ``/healthz`` answers.

It asks the address gunicorn binds (``HOST``/``PORT``; 127.0.0.1 for 0.0.0.0); ``/healthz``
answers whatever ``TRUSTED_HOSTS`` says, like the other probes.
Standard library only: it runs with the image's Python and nothing else.
"""

from __future__ import annotations

import http.client
import json
import os
import sys


def main() -> int:
    host = os.environ.get("HOST", "127.0.0.1")
    if host in ("0.0.0.0", "::", ""):  # noqa: S104  # the wildcard bind is reached on loopback
        host = "127.0.0.1"
    port = int(os.environ.get("PORT", "8080"))
    conn = http.client.HTTPConnection(host, port, timeout=2)
    try:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        body = response.read()
    except OSError as exc:
        print(f"healthcheck: {host}:{port} unreachable: {exc}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    try:
        ok = response.status == 200 and json.loads(body).get("status") == "ok"
    except ValueError:
        ok = False
    if not ok:
        print(f"healthcheck: /healthz answered {response.status}: {body[:200]!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
