"""X-Request-ID: echo a valid incoming one, otherwise generate one (SPEC §3).

The pipeline (:mod:`core.http.pipeline`) assigns it once per request, before anything else,
to the request state (``g.keel``); :func:`current_request_id` reads it from there.
"""

from __future__ import annotations

import os
import re

HEADER = "X-Request-ID"
ENVIRON_KEY = "HTTP_X_REQUEST_ID"  # what request.headers[HEADER] reads
_VALID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_urandom = os.urandom


def new_request_id(incoming: str | None) -> str:
    """``incoming`` (the client's ``X-Request-ID``) when valid, otherwise 32 random hex digits
    (as random as a UUID4's, without building a UUID object)."""
    if incoming and _VALID.fullmatch(incoming):
        return incoming
    return _urandom(16).hex()


def current_request_id() -> str:
    from core.http.state import get_state

    return get_state().request_id
