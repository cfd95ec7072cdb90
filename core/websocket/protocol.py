"""What a Socket.IO client may send, and the shapes it gets back (SPEC §8).

Each client event carries at most one argument, a JSON object; the server answers through the
event's acknowledgement with ``{"ok": true, ...}`` or ``{"ok": false, "error": {"code",
"message"}}``. Invalid input raises the :class:`~core.errors.HTTPError` of the HTTP API
(``validation_error``, ``payload_too_large``), turned into that shape by the one error boundary
in :mod:`core.websocket.events`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from core.errors import HTTPError, PayloadTooLarge, ValidationError

ROOM_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MAX_MESSAGE_BYTES = 4 * 1024  # a room message: a string or a JSON object of at most 4 KiB
# The largest Engine.IO packet (one WebSocket message) accepted; a bigger one closes the
# connection before it is parsed. Room: a message of 4 KiB in its envelope, a connect packet
# with an 8 KiB token, a create_room with its member list.
MAX_FRAME_BYTES = 32 * 1024
MAX_ROOM_MEMBERS_LISTED = 256  # user ids given to create_room
MAX_MEMBERS_LIMIT = 100_000  # the largest max_members

# The client events and what each carries (checked in order by the handlers).
EVENTS = ("create_room", "join_room", "leave_room", "room_message", "list_rooms", "room_members")


@dataclass(frozen=True)
class RoomSpec:
    """A validated ``create_room``: ``max_members`` 0 means no limit."""

    room: str
    private: bool
    members: tuple[int, ...]
    max_members: int


def payload(args: tuple[Any, ...], *, optional: bool = False) -> dict[str, Any]:
    """The event's one argument, a JSON object (``{}`` when ``optional`` and none was sent)."""
    if not args and optional:
        return {}
    if len(args) != 1 or not isinstance(args[0], dict):
        raise ValidationError("Send one JSON object with the event.", details=[{"param": "", "message": "an object"}])
    data: dict[str, Any] = args[0]
    return data


def room_name(data: dict[str, Any]) -> str:
    room = data.get("room")
    if not isinstance(room, str) or not ROOM_RE.match(room):
        raise ValidationError(
            "room: 1 to 64 characters of A-Z a-z 0-9 _ . : -",
            details=[{"param": "room", "message": "1 to 64 characters of A-Z a-z 0-9 _ . : -"}],
        )
    return room


def room_spec(data: dict[str, Any]) -> RoomSpec:
    """``create_room {room, private?: bool, members?: [user ids], max_members?: int}``."""
    room = room_name(data)
    private = data.get("private", False)
    if not isinstance(private, bool):
        raise _invalid("private", "true or false")
    members = data.get("members", [])
    if (
        not isinstance(members, list)
        or len(members) > MAX_ROOM_MEMBERS_LISTED
        or not all(type(m) is int and m > 0 for m in members)
    ):
        raise _invalid("members", f"a list of at most {MAX_ROOM_MEMBERS_LISTED} user ids (positive integers)")
    max_members = data.get("max_members", 0)
    if max_members is None:
        max_members = 0
    if type(max_members) is not int or not 0 <= max_members <= MAX_MEMBERS_LIMIT:
        raise _invalid("max_members", f"an integer from 1 to {MAX_MEMBERS_LIMIT} (0 or absent: no limit)")
    return RoomSpec(room, private, tuple(dict.fromkeys(members)), max_members)


def message_body(data: dict[str, Any]) -> str | dict[str, Any]:
    """``room_message``'s ``message``: a string or a JSON object of at most 4 KiB (UTF-8)."""
    message = data.get("message")
    if isinstance(message, str):
        size = len(message.encode("utf-8", "surrogatepass"))
    elif isinstance(message, dict):
        try:  # NaN and Infinity parse in Python but not in a browser: refused, not relayed
            text = json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except ValueError:
            raise _invalid("message", "a JSON object without NaN or Infinity") from None
        size = len(text.encode("utf-8", "surrogatepass"))
    else:
        raise _invalid("message", "a string or a JSON object")
    if size > MAX_MESSAGE_BYTES:
        raise PayloadTooLarge(f"message: {size} bytes; at most {MAX_MESSAGE_BYTES} bytes (a string or a JSON object)")
    return message


def error_body(exc: HTTPError) -> dict[str, Any]:
    """``{"code", "message"}`` of an error (plus ``retry_after`` for limits and bans)."""
    body: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.retry_after is not None:
        body["retry_after"] = exc.retry_after
    return body


def _invalid(param: str, expected: str) -> ValidationError:
    return ValidationError(f"{param}: {expected}", details=[{"param": param, "message": expected}])
