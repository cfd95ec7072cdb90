"""The room operations (SPEC §8): the store, the Socket.IO room, presence and the room hooks.

A connection that joins a room is added to the store (cluster-wide membership) and to the
Socket.IO room of its process (what emits reach: with ``SOCKETIO_MESSAGE_QUEUE`` an emit to a
room reaches its connections on every process). A member's first connection announces
``presence`` ``joined`` to the others and fires ``room_joined``; its last one announces
``left`` and fires ``room_left``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from core import metrics
from core.errors import Conflict, Forbidden, NotFound, ServiceUnavailable
from core.websocket.store import FORBIDDEN, FULL, NOT_FOUND, RoomMeta, RoomStore

if TYPE_CHECKING:
    from socketio import Server

    from core.managers.hooks import HooksManager
    from core.websocket.connections import Connection
    from core.websocket.protocol import RoomSpec

logger = logging.getLogger(__name__)

NAMESPACE = "/"


class Rooms:
    def __init__(self, store: RoomStore, server: Server, hooks: HooksManager, auto_create: bool) -> None:
        self.store = store
        self.server = server
        self.hooks = hooks
        self.auto_create = auto_create
        self._lock = threading.Lock()
        self._pending: list[tuple[str, str]] = []  # (room, member) left while Redis was down

    # -- events ----------------------------------------------------------------------------
    def create(self, conn: Connection, spec: RoomSpec) -> dict[str, Any]:
        """Create a room and join it (its creator is a member; a private room admits the
        creator and ``spec.members``)."""
        allowed = [conn.member, *(f"user:{uid}" for uid in spec.members)] if spec.private else []
        if not self.store.create(spec.room, RoomMeta(spec.private, spec.max_members, False), allowed):
            raise Conflict(f"room {spec.room!r} already exists")
        answer = self.join(conn, spec.room)
        return {**answer, "private": spec.private, "max_members": spec.max_members or None}

    def join(self, conn: Connection, room: str) -> dict[str, Any]:
        if room in conn.rooms:  # already joined on this connection: nothing changes
            return {"room": room, "members": self.store.members(room, conn.member).members}
        result = self.store.join(room, conn.member, conn.user, self.auto_create)
        if result.status == NOT_FOUND:
            raise NotFound(f"no room {room!r}")
        if result.status == FORBIDDEN:
            raise Forbidden(f"room {room!r} is private and you are not a member")
        if result.status == FULL:
            raise Conflict(f"room {room!r} is full")
        self.server.enter_room(conn.sid, room, namespace=NAMESPACE)
        conn.rooms.add(room)
        if result.first:
            self.announce(room, conn.user, "joined", skip_sid=conn.sid)
        return {"room": room, "members": result.members}

    def leave(self, conn: Connection, room: str) -> dict[str, Any]:
        if room not in conn.rooms:
            return {"room": room, "left": False}
        conn.rooms.discard(room)
        self.server.leave_room(conn.sid, room, namespace=NAMESPACE)
        left = self.store.leave(room, conn.member)
        if left is not None:
            self.announce(room, left, "left")
        return {"room": room, "left": True}

    def leave_all(self, conn: Connection) -> None:
        """The connection closed: leave every room it joined (the Socket.IO rooms are left by
        Socket.IO itself). With Redis down, the leaves are retried by the heartbeat."""
        for room in list(conn.rooms):
            conn.rooms.discard(room)
            try:
                left = self.store.leave(room, conn.member)
            except ServiceUnavailable:
                logger.warning("websocket: Redis unavailable; leaving room %s is retried at the next heartbeat", room)
                with self._lock:
                    self._pending.append((room, conn.member))
                continue
            except Exception:
                # A closing connection must not raise into Socket.IO; its membership stays
                # counted until this process's memberships are swept or it leaves again.
                logger.exception("websocket: leaving room %s on disconnect failed", room)
                continue
            if left is not None:
                self.announce(room, left, "left")

    def message(self, conn: Connection, room: str, message: Any) -> dict[str, Any]:
        if room not in conn.rooms:
            raise Forbidden(f"join room {room!r} before sending to it")
        ts = int(time.time() * 1000)
        msg_id = uuid.uuid4().hex
        self.emit(room, "room_message", {"room": room, "id": msg_id, "from": conn.user, "message": message, "ts": ts})
        metrics.WS_ROOM_MESSAGES.inc()
        return {"room": room, "id": msg_id, "ts": ts}

    def members(self, room: str, member: str | None) -> list[dict[str, Any]]:
        result = self.store.members(room, member)
        if result.status == NOT_FOUND:
            raise NotFound(f"no room {room!r}")
        if result.status == FORBIDDEN:
            raise Forbidden(f"room {room!r} is private and you are not a member")
        return result.members

    # -- fan-out ---------------------------------------------------------------------------
    def emit(self, room: str, event: str, data: Any, skip_sid: str | None = None) -> None:
        """``event`` to every connection in ``room`` on every process."""
        self.server.emit(event, data, to=room, skip_sid=skip_sid, namespace=NAMESPACE)

    def announce(self, room: str, user: dict[str, Any], status: str, *, skip_sid: str | None = None) -> None:
        """``presence`` to the room and the ``room_joined``/``room_left`` hook."""
        self.emit(room, "presence", {"room": room, "user": user, "status": status}, skip_sid=skip_sid)
        self.hooks.trigger("room_joined" if status == "joined" else "room_left", room=room, user=user)

    def retry_leaves(self) -> None:
        """Leave what connections that closed while Redis was down had joined (heartbeat)."""
        with self._lock:
            pending, self._pending = self._pending, []
        for i, (room, member) in enumerate(pending):
            try:
                left = self.store.leave(room, member)
            except ServiceUnavailable:
                with self._lock:
                    self._pending.extend(pending[i:])
                return
            if left is not None:
                self.announce(room, left, "left")

    def rejoin(self, conns: list[Connection]) -> None:
        """This process's memberships were swept (it missed its heartbeats): count its
        connections in their rooms again."""
        for conn in conns:
            for room in list(conn.rooms):
                result = self.store.join(room, conn.member, conn.user, True)
                if result.first:
                    self.announce(room, conn.user, "joined", skip_sid=conn.sid)
