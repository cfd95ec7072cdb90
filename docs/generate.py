"""Regenerate the parts of ``docs/`` that come from code: ``python docs/generate.py``.

- ``docs/configuration.md``: the settings table, from ``config/schema.py``;
- ``docs/errors.md``: the HTTP error table, from ``core/errors.py``;
- ``docs/operations.md``: the metrics table, from ``core/metrics.py``;
- ``docs/auth.md``, ``docs/limits.md``, ``docs/websocket.md``: their settings (from
  ``config/schema.py``, by key prefix), the rate-limit response headers (the names
  ``core/http/limits.py`` sets), the Socket.IO client events (``core/websocket/protocol.py``'s
  ``EVENTS``) and the protocol's limits (its constants).

Each file keeps its hand-written text; only the part between ``<!-- generated:start -->``
and ``<!-- generated:end -->`` is replaced (``<!-- generated:NAME:start -->`` …
``<!-- generated:NAME:end -->`` when a file has several generated parts).
``python docs/generate.py --check`` exits 1 when a file is out of date (the test suite runs it).
"""

from __future__ import annotations

import argparse
import ast
import inspect
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config.schema import GENERATED, SETTINGS, Setting  # noqa: E402
from core import errors, metrics  # noqa: E402
from core.websocket import protocol, store  # noqa: E402

START, END = "<!-- generated:start -->", "<!-- generated:end -->"


def _default(setting: Setting) -> str:
    if setting.key in GENERATED:
        return "generated (development)"
    value = setting.default
    if value in (None, "", []):
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(value)
    return str(value)


def _allowed(setting: Setting) -> str:
    if setting.choices:
        return " \\| ".join(setting.choices)
    low, high = setting.minimum, setting.maximum
    if low is not None and high is not None:
        return f"{low:g} – {high:g}"
    if low is not None:
        return f"≥ {low:g}"
    if setting.type == "limit":
        return "`n/period;…`"
    return ""


def settings_table(prefixes: tuple[str, ...] = ("",)) -> str:
    """The settings whose key starts with one of ``prefixes`` (all of them by default)."""
    rows = ["| key | type | default | allowed | secret | what it does |", "|---|---|---|---|---|---|"]
    for s in SETTINGS:
        if not s.key.startswith(prefixes):
            continue
        what = s.help.replace("|", "\\|") + (" (required)" if s.required else "")
        rows.append(f"| `{s.key}` | {s.type} | {_default(s)} | {_allowed(s)} | {'yes' if s.secret else ''} | {what} |")
    return "\n".join(rows)


def errors_table() -> str:
    rows = ["| status | code | default message | raised as |", "|---|---|---|---|"]
    classes = [
        cls
        for name in errors.__all__
        if inspect.isclass(cls := getattr(errors, name))
        and issubclass(cls, errors.HTTPError)
        and cls is not errors.HTTPError
    ]
    for cls in sorted(classes, key=lambda c: (c.status, c.code, c.__name__)):
        rows.append(f"| {cls.status} | `{cls.code}` | {cls.message} | `{cls.__name__}` |")
    return "\n".join(rows)


def metrics_table() -> str:
    rows = ["| metric | type | labels | what it counts |", "|---|---|---|---|"]
    for metric in metrics.ALL:
        kind = type(metric).__name__.lower()
        name = metric._name + ("_total" if kind == "counter" else "")
        labels = ", ".join(f"`{label}`" for label in metric._labelnames)
        rows.append(f"| `{name}` | {kind} | {labels} | {metric._documentation} |")
    return "\n".join(rows)


# --- rate-limit headers (docs/limits.md) -------------------------------------------------------

LIMIT_HEADERS = {
    "X-RateLimit-Limit": "the tightest tier's count (`300` for `300/minute`)",
    "X-RateLimit-Remaining": "requests that tier still admits in its window",
    "X-RateLimit-Reset": "seconds until the oldest request counted in that tier leaves the window (at least 1)",
    "RateLimit-Policy": 'every tier applied to the request: `"<name>";q=<count>;w=<window seconds>`, comma-separated',
    "RateLimit": 'the tightest tier: `"<name>";r=<remaining>;t=<reset seconds>`',
}


def limit_header_names() -> list[str]:
    """The header names ``core/http/limits.py`` adds to responses: ``headers.add("Name", …)``
    calls, or ``("Name", value)`` pairs appended to the header list, for names that start with
    ``RateLimit`` or ``X-RateLimit``."""
    tree = ast.parse((ROOT / "core" / "http" / "limits.py").read_text(encoding="utf-8"))
    names = []
    for node in ast.walk(tree):
        first = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add":
            first = node.args[0] if node.args else None
        elif isinstance(node, ast.Tuple) and len(node.elts) == 2:
            first = node.elts[0]
        if (
            isinstance(first, ast.Constant)
            and isinstance(first.value, str)
            and first.value.startswith(("RateLimit", "X-RateLimit"))
        ):
            names.append(first.value)
    return names


def limit_headers_table() -> str:
    names = limit_header_names()
    if sorted(names) != sorted(LIMIT_HEADERS):
        raise SystemExit(f"docs/generate.py: describe the rate-limit headers {names} in LIMIT_HEADERS")
    rows = ["| header | value |", "|---|---|"]
    rows += [f"| `{name}` | {LIMIT_HEADERS[name]} |" for name in names]
    return "\n".join(rows)


# --- Socket.IO events (docs/websocket.md) ------------------------------------------------------

EVENT_DOCS = {
    "create_room": (
        "`{room, private?, members?, max_members?}`",
        "`{room, members, private, max_members}`; the caller joins it",
        "`conflict` (the name exists)",
    ),
    "join_room": (
        "`{room}`",
        "`{room, members}`",
        "`forbidden` (private, not listed), `not_found` (unknown and `WS_AUTO_CREATE_ROOMS=false`), `conflict` (full)",
    ),
    "leave_room": ("`{room}`", "`{room, left}`: `left` is false when this connection was not in it", ""),
    "room_message": (
        "`{room, message}`: a string or a JSON object",
        "`{room, id, ts}`; every member gets the `room_message` event",
        "`forbidden` (this connection has not joined the room), `payload_too_large`",
    ),
    "list_rooms": (
        "none (or `{}`)",
        "`{rooms: [{room, private, members, max_members}]}`: public rooms and the private ones listing you",
        "",
    ),
    "room_members": (
        "`{room}`",
        "`{room, members: [{user_id, username}]}`, cluster-wide",
        "`not_found`, `forbidden` (private, not listed)",
    ),
}


def events_table() -> str:
    """One row per client event ``core.websocket.protocol.EVENTS`` declares, in its order."""
    if sorted(protocol.EVENTS) != sorted(EVENT_DOCS):
        raise SystemExit(f"docs/generate.py: describe the Socket.IO events {protocol.EVENTS} in EVENT_DOCS")
    any_event = "`validation_error`, `rate_limited`, `banned`"
    rows = [f"| event | payload | answer (besides `ok: true`) | errors (besides {any_event}) |", "|---|---|---|---|"]
    for event in protocol.EVENTS:
        payload, answer, errs = EVENT_DOCS[event]
        rows.append(f"| `{event}` | {payload} | {answer} | {errs or '—'} |")
    return "\n".join(rows)


def protocol_table() -> str:
    """The protocol's bounds, read from the constants that enforce them."""
    kib = 1024
    rows = ["| what | bound |", "|---|---|"]
    rows.append(f"| room name | `{protocol.ROOM_RE.pattern}` |")
    rows.append(
        f"| `room_message` `message` | {protocol.MAX_MESSAGE_BYTES // kib} KiB of UTF-8 (a JSON object: compact) |"
    )
    rows.append(f"| one WebSocket message | {protocol.MAX_FRAME_BYTES // kib} KiB; bigger closes the connection |")
    rows.append(f"| `create_room` `members` | at most {protocol.MAX_ROOM_MEMBERS_LISTED} user ids |")
    rows.append(f"| `create_room` `max_members` | 0 (no limit) to {protocol.MAX_MEMBERS_LIMIT:,} |")
    rows.append(f"| an empty room made by `create_room` | kept {store.EMPTY_ROOM_TTL} s |")
    return "\n".join(rows)


def _settings(*prefixes: str) -> Callable[[], str]:
    return lambda: settings_table(prefixes)


Builder = Callable[[], str]
TARGETS: dict[str, dict[str, Builder]] = {
    "configuration.md": {"": settings_table},
    "errors.md": {"": errors_table},
    "operations.md": {"": metrics_table},
    "auth.md": {"settings": _settings("JWT_", "API_KEY", "AUTH_")},
    "limits.md": {
        "headers": limit_headers_table,
        "settings": _settings("RATE_LIMIT_", "BAN_", "TRUSTED_PROXY_COUNT"),
    },
    "websocket.md": {
        "events": events_table,
        "protocol": protocol_table,
        "settings": _settings("WS_", "SOCKETIO_"),
    },
}


def markers(name: str) -> tuple[str, str]:
    if not name:
        return START, END
    return f"<!-- generated:{name}:start -->", f"<!-- generated:{name}:end -->"


def render(path: Path, parts: dict[str, Builder]) -> str:
    text = path.read_text(encoding="utf-8")
    for name, build in parts.items():
        start, end = markers(name)
        head, _, rest = text.partition(start)
        _, found, tail = rest.partition(end)
        if not rest or not found:
            raise SystemExit(f"{path}: no {start} … {end} markers")
        text = f"{head}{start}\n{build()}\n{end}{tail}"
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a file is out of date")
    options = parser.parse_args()
    stale = []
    for name, parts in TARGETS.items():
        path = ROOT / "docs" / name
        new = render(path, parts)
        if new != path.read_text(encoding="utf-8"):
            stale.append(name)
            if not options.check:
                path.write_text(new, encoding="utf-8")
    if options.check and stale:
        print(f"out of date: {', '.join(stale)} (run: python docs/generate.py)")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
