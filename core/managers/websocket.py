"""WebSocketManager: authenticated Socket.IO rooms on Flask-SocketIO (SPEC §8).

The facade a reader finds first; the parts live in :mod:`core.websocket` (rooms, presence,
connections, the Redis store) and the client events in :mod:`core.websocket.events`, installed
by the app factory because they use the HTTP guard.

- **Server**: Flask-SocketIO in gevent mode under gunicorn's gevent worker, threading elsewhere
  (tests, ``python app.py``). Emits go through ``SOCKETIO_MESSAGE_QUEUE`` (default
  ``REDIS_URL``) so that they reach every worker and instance. Browser origins: same origin,
  plus ``CORS_ORIGINS``. WebSocket transport only unless ``WS_LONG_POLLING=true``: a
  WebSocket is one TCP connection, so any worker can own it and several workers per instance
  need no sticky sessions; long-polling is a series of HTTP requests that must all reach the
  process holding the session (one worker per instance, sticky load balancing).
  Packets over :data:`~core.websocket.protocol.MAX_FRAME_BYTES` close the connection.
- **Rooms and presence** in Redis (:class:`~core.websocket.redis_store.RedisRoomStore`), or in
  process without ``REDIS_URL``; a heartbeat removes the members of a process that died.
- **Forced disconnect**: the ``tokens_revoked``, ``api_key_revoked`` and ``identity_banned``
  hooks, and :meth:`disconnect_identity`, publish a target on the Redis channel ``ws:kick``;
  every process sends ``force_disconnect`` ``{reason}`` to its matching connections and drops
  them.
- **Server API for modules**: :meth:`emit_to_room`, :meth:`room_members`, :meth:`list_rooms`,
  :meth:`disconnect_identity`.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any, ClassVar

import socketio
from flask import Flask
from flask_socketio import SocketIO

from core import metrics
from core.errors import ServiceUnavailable, ValidationError
from core.managers.base import Manager
from core.websocket.connections import Connection, Registry, Target
from core.websocket.presence import Heartbeat
from core.websocket.protocol import MAX_FRAME_BYTES, ROOM_RE
from core.websocket.redis_store import RedisRoomStore
from core.websocket.rooms import NAMESPACE, Rooms
from core.websocket.store import MemoryRoomStore, RoomStore

if TYPE_CHECKING:
    from core.app_manager import AppManager

logger = logging.getLogger(__name__)

KICK_CHANNEL = "ws:kick"
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_BAN_MATCH = {"user": "user_tokens", "api_key": "api_key", "ip": "ip"}


class WebSocketManager(Manager):
    name: ClassVar[str] = "websocket"

    socketio: SocketIO
    rooms: Rooms
    message_rate: str

    def __init__(self) -> None:
        self.node = uuid.uuid4().hex  # this process, in the store's heartbeat records
        self.registry = Registry()
        self.heartbeat: Heartbeat | None = None
        self._disposed = False

    # -- lifecycle ----------------------------------------------------------------------------
    def init_app(self, app: Flask, am: AppManager) -> None:
        super().init_app(app, am)
        self.am = am
        s = am.settings
        self.message_rate = s["WS_MESSAGE_RATE"]
        options: dict[str, Any] = {
            "async_mode": _async_mode(),
            "cors_allowed_origins": OriginCheck(s["CORS_ORIGINS"]),
            "transports": ["polling", "websocket"] if s["WS_LONG_POLLING"] else ["websocket"],
            "max_http_buffer_size": MAX_FRAME_BYTES,
            # One event at a time per connection, in order: a client's messages keep their
            # order, and a flood waits on its own socket instead of spawning a task per event.
            "async_handlers": False,
            "logger": False,
            "engineio_logger": False,
        }
        queue = s["SOCKETIO_MESSAGE_QUEUE"] or s["REDIS_URL"]
        channel = s["REDIS_KEY_PREFIX"] + "socketio"  # apps sharing a Redis never share emits
        if queue and queue.startswith(_REDIS_SCHEMES):
            options["client_manager"] = socketio.RedisManager(
                queue, channel=channel, redis_options={"socket_connect_timeout": 2.0}
            )
        elif queue:
            options.update(message_queue=queue, channel=channel)
        self.socketio = SocketIO(app, **options)
        _bound_websocket_messages(self.socketio.server.eio, MAX_FRAME_BYTES)
        ttl = float(s["WS_PRESENCE_TTL"])
        store: RoomStore
        if am.redis.client is not None:
            store = RedisRoomStore(am.redis, self.node, ttl)
        else:
            store = MemoryRoomStore()
        self.rooms = Rooms(store, self.socketio.server, am.hooks, s["WS_AUTO_CREATE_ROOMS"])
        if am.redis.client is not None:
            self.heartbeat = Heartbeat(self.rooms, self.registry, ttl / 3)
        am.hooks.register("tokens_revoked", self._on_tokens_revoked)
        am.hooks.register("api_key_revoked", self._on_api_key_revoked)
        am.hooks.register("identity_banned", self._on_identity_banned)
        am.redis.subscribe(KICK_CHANNEL, self._on_kick)  # the RedisManager owns and closes it

    def start(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.start()

    def health(self) -> dict[str, Any]:
        return {
            "status": "healthy",
            "connections": len(self.registry),
            "async_mode": self.socketio.async_mode,
            "store": "redis" if isinstance(self.rooms.store, RedisRoomStore) else "in-process",
        }

    def dispose(self) -> None:
        """Leave the rooms of this process's connections and drop its heartbeat record."""
        if self._disposed or "rooms" not in vars(self):
            return
        self._disposed = True
        if self.heartbeat is not None:
            self.heartbeat.stop()
        for conn in self.registry.all():
            self.rooms.leave_all(conn)
        try:
            self.rooms.store.forget_node()
        except ServiceUnavailable:
            logger.warning("websocket: Redis unavailable at shutdown; this process's members expire with its heartbeat")
        self.socketio.server.shutdown()  # Engine.IO's service task

    # -- server API for modules ---------------------------------------------------------------
    def emit_to_room(self, room: str, event: str, data: Any) -> None:
        """Send ``event`` with ``data`` to every connection in ``room``, on every instance."""
        if not isinstance(room, str) or not ROOM_RE.match(room):
            raise ValidationError(f"room {room!r}: 1 to 64 characters of A-Z a-z 0-9 _ . : -")
        self.rooms.emit(room, event, data)

    def room_members(self, room: str) -> list[dict[str, Any]]:
        """The members of ``room`` across the cluster (``[]`` for a room that does not exist):
        ``[{"user_id", "username"}]``, one per user however many connections it has."""
        result = self.rooms.store.members(room, None)
        return result.members

    def list_rooms(self) -> list[dict[str, Any]]:
        """Every room across the cluster, private ones too, by name:
        ``[{"room", "private", "members", "max_members"}]`` (``members``: how many)."""
        return self.rooms.store.rooms(None)

    def disconnect_identity(
        self, *, user_id: int | str | None = None, api_key_id: str | None = None, reason: str = "disconnected"
    ) -> None:
        """Drop every connection of a user (its tokens and the API keys it owns) or of one API
        key, on every instance; each gets ``force_disconnect`` ``{reason}`` first."""
        if (user_id is None) == (api_key_id is None):
            raise ValueError("disconnect_identity: give exactly one of user_id= or api_key_id=")
        if user_id is not None:
            self.kick(Target("user", str(user_id), reason))
        else:
            self.kick(Target("api_key", str(api_key_id), reason))

    # -- forced disconnect --------------------------------------------------------------------
    def kick(self, target: Target) -> None:
        """Drop ``target``'s connections on every process (through Redis; this process alone
        when Redis does not answer)."""
        if not self.am.redis.publish(KICK_CHANNEL, target.as_message()):
            self._on_kick(target.as_message())

    def _on_kick(self, message: Any) -> None:
        target = Target.from_message(message)
        if target is None:
            logger.warning("websocket: ignored a malformed forced-disconnect message")
            return
        for conn in self.registry.matching(target):
            self.drop(conn, target.reason)

    def drop(self, conn: Connection, reason: str) -> None:
        """Send ``force_disconnect`` ``{reason}`` to this process's ``conn``, close it and leave
        its rooms. Once per connection, whoever asks first."""
        if self.registry.remove(conn.sid) is None:
            return
        metrics.WS_CONNECTIONS.dec()
        metrics.WS_FORCED_DISCONNECTS.labels(reason).inc()
        server = self.socketio.server
        server.emit("force_disconnect", {"reason": reason}, to=conn.sid, namespace=NAMESPACE, ignore_queue=True)
        eio_sid = server.manager.eio_sid_from_sid(conn.sid, NAMESPACE)
        server.disconnect(conn.sid, namespace=NAMESPACE, ignore_queue=True)
        transport = server.eio.sockets.get(eio_sid) if eio_sid is not None else None
        if transport is not None:
            # The transport too, so that a client ignoring DISCONNECT is gone. Not through
            # eio.disconnect(): it waits for the socket's queue to drain, forever when the
            # client closed first; the service task forgets the closed socket.
            transport.close(wait=False, reason=server.eio.reason.SERVER_DISCONNECT)
        self.rooms.leave_all(conn)

    def _on_tokens_revoked(self, user_id: Any = None, family: Any = None, reason: Any = None, **_: Any) -> None:
        if family:
            self.kick(Target("family", str(family), "tokens_revoked"))
        elif user_id is not None:
            # A disabled user loses every connection, API keys included; otherwise its tokens.
            match = "user" if reason == "disabled" else "user_tokens"
            self.kick(Target(match, str(user_id), "tokens_revoked"))

    def _on_api_key_revoked(self, api_key_id: Any = None, **_: Any) -> None:
        if api_key_id is not None:
            self.kick(Target("api_key", str(api_key_id), "api_key_revoked"))

    def _on_identity_banned(self, kind: Any = None, identifier: Any = None, **_: Any) -> None:
        match = _BAN_MATCH.get(str(kind))
        if match is not None and identifier is not None:
            self.kick(Target(match, str(identifier), "banned"))


class OriginCheck:
    """Engine.IO's origin check: the page's own origin (``scheme://Host``), or one listed in
    ``CORS_ORIGINS`` (``*``: any; refused in production by the settings check)."""

    def __init__(self, origins: list[str]) -> None:
        self.any = "*" in origins
        self.origins = frozenset(o.rstrip("/") for o in origins if o != "*")

    def __call__(self, origin: str | None, environ: dict[str, Any]) -> bool:
        if origin is None or self.any or origin in self.origins:
            return True
        host = environ.get("HTTP_HOST")
        return host is not None and origin == f"{environ.get('wsgi.url_scheme', 'http')}://{host}"


def _async_mode() -> str:
    """``gevent`` when gevent patched the socket module (gunicorn's gevent worker), else
    ``threading`` (tests, ``python app.py``, sync workers)."""
    try:
        from gevent import monkey
    except ImportError:  # gevent is a runtime requirement; a slim install may still lack it
        return "threading"
    return "gevent" if monkey.is_module_patched("socket") else "threading"


def _bound_websocket_messages(eio: Any, limit: int) -> None:
    """Make the WebSocket layer refuse a message over ``limit`` bytes while it arrives.

    Engine.IO checks ``max_http_buffer_size`` only once a WebSocket message was read whole (and
    decompressed); simple-websocket can stop it at the limit (close code 1009) but Engine.IO's
    drivers do not pass it one. The driver class is replaced for this server only.
    """
    base = eio._async["websocket"]

    class BoundedWebSocket(base):  # type: ignore[misc,valid-type]
        def __init__(self, handler: Any, server: Any) -> None:
            super().__init__(handler, server)
            if isinstance(getattr(self, "server_args", None), dict):
                self.server_args["max_message_size"] = limit

    eio._async = {**eio._async, "websocket": BoundedWebSocket}
