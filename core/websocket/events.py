"""The Socket.IO transport (SPEC §8): connect authentication, the client events, and the one
error boundary.

- **connect**: ``auth={"token": ...}`` or ``auth={"api_key": ...}`` goes through the HTTP
  request guard (:func:`core.http.guard.check`) exactly as an ``Authorization: Bearer`` or
  ``X-API-Key`` header would: the same token and key checks, and ONE limiter call for the
  bans (client IP and identity), the limits and the revocation deny-list. A refusal carries
  ``{"code": "unauthorized"|"banned"|..., "message"}`` (also as ``data`` for the JavaScript
  client's ``err.data``). Headers of the handshake are never read for credentials.
- **events**: every client event first counts against ``WS_MESSAGE_RATE`` for its connection
  (through the same limiter; violations count toward the identity's ban), then runs with the
  identity bound at connect. An event with no handler is answered ``not_found`` (and still
  counted), so no event escapes the limit.
- **errors**: :meth:`Handlers.boundary` is Flask-SocketIO's ``on_error_default``: every error
  of every event becomes the acknowledgement ``{"ok": false, "error": {"code", "message"}}``
  and an ``error`` event, both to the caller only. Unexpected exceptions are logged with their
  traceback and answered ``internal_error``.

:func:`install` registers them; the app factory calls it once the managers exist (this module
uses ``core.http``, which the managers layer must not import).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from flask import Flask, request
from socketio.exceptions import ConnectionRefusedError as SocketIORefusal

from core import metrics
from core.auth.identity import Requirement
from core.errors import Banned, HTTPError, InternalError, NotFound, RateLimited, Unauthorized
from core.http import guard
from core.http.state import get_state
from core.websocket import protocol
from core.websocket.connections import Connection
from core.websocket.rooms import NAMESPACE

if TYPE_CHECKING:
    from core.app_manager import AppManager

logger = logging.getLogger(__name__)

# What a connect asks, as an HTTP endpoint would: any identity, no role, no extra limit.
CONNECT = Requirement(auth="any", name="socketio_connect")
_CREDENTIAL_HEADERS = ("HTTP_AUTHORIZATION", "HTTP_X_API_KEY")


class Refused(SocketIORefusal):
    """A refused connect: the client's ``connect_error`` gets ``{"code", "message"}``."""

    def __init__(self, exc: HTTPError) -> None:
        super().__init__()
        body = protocol.error_body(exc)
        self.error_args = {**body, "data": body}


class Handlers:
    def __init__(self, app: Flask, am: AppManager) -> None:
        self.app = app
        self.am = am
        self.ws = am.websocket
        self._ok_counters = {event: metrics.WS_EVENTS.labels(event, "ok") for event in (*protocol.EVENTS, "unknown")}

    # -- connect / disconnect ---------------------------------------------------------------
    def connect(self, auth: Any = None) -> bool:
        sid: str = request.sid  # type: ignore[attr-defined]  # set by Flask-SocketIO
        try:
            conn = self._authenticate(sid, auth)
        except HTTPError as exc:
            metrics.WS_CONNECTS.labels(exc.code).inc()
            raise Refused(exc) from None
        except Exception:
            # Refuse, never accept, on a failure we did not foresee; the traceback is logged.
            logger.exception("websocket: connect authentication failed")
            metrics.WS_CONNECTS.labels("internal_error").inc()
            raise Refused(InternalError()) from None
        self.ws.registry.add(conn)
        metrics.WS_CONNECTIONS.inc()
        metrics.WS_CONNECTS.labels("accepted").inc()
        return True

    def _authenticate(self, sid: str, auth: Any) -> Connection:
        """The HTTP guard on the handshake request with ``auth``'s credential as its header."""
        if not isinstance(auth, dict):
            raise Unauthorized()
        environ = {k: v for k, v in request.environ.items() if k not in _CREDENTIAL_HEADERS}
        token, api_key = auth.get("token"), auth.get("api_key")
        if token is not None:
            if not isinstance(token, str):
                raise Unauthorized()
            environ["HTTP_AUTHORIZATION"] = "Bearer " + token
        if api_key is not None:
            if not isinstance(api_key, str):
                raise Unauthorized()
            environ["HTTP_X_API_KEY"] = api_key
        with self.app.request_context(environ):
            ctx = guard.check(CONNECT)
            principal = get_state().principal
        assert principal is not None  # CONNECT admits no anonymous caller
        if principal.kind == "user":
            uid = int(principal.id)
            user = {"user_id": uid, "username": principal.name}
            fam = principal.claims.get("fam")
            return Connection(sid, "user", str(uid), f"user:{uid}", user, ctx.client_ip, family=fam)
        owner_id = principal.owner_id
        if owner_id is None:
            user = {"user_id": None, "username": principal.name}
            return Connection(sid, "api_key", principal.id, f"api_key:{principal.id}", user, ctx.client_ip)
        owner = self.am.jwt.users.get(owner_id)
        if owner is None or not owner.active:
            raise Unauthorized()
        user = {"user_id": owner.id, "username": owner.username}
        return Connection(sid, "api_key", principal.id, f"user:{owner.id}", user, ctx.client_ip)

    def disconnect(self, *_reason: Any) -> None:
        conn = self.ws.registry.remove(request.sid)  # type: ignore[attr-defined]
        if conn is None:  # dropped by the server: already accounted for
            return
        metrics.WS_CONNECTIONS.dec()
        self.ws.rooms.leave_all(conn)

    # -- client events ----------------------------------------------------------------------
    def _begin(self) -> Connection:
        """The caller's connection, once its event was counted against ``WS_MESSAGE_RATE``."""
        conn = self.ws.registry.get(request.sid)  # type: ignore[attr-defined]
        if conn is None:
            raise Unauthorized()
        decision = self.am.limiter.hit(
            ("ws", conn.sid), self.ws.message_rate, identity=conn.identity, level="ws_message"
        )
        if decision.banned:
            self.ws.drop(conn, "banned")
            raise Banned(retry_after=decision.retry_after)
        if not decision.allowed:
            raise RateLimited(retry_after=decision.retry_after)
        return conn

    def _ok(self, event: str, body: dict[str, Any]) -> dict[str, Any]:
        self._ok_counters[event].inc()
        return {"ok": True, **body}

    def create_room(self, *args: Any) -> dict[str, Any]:
        conn = self._begin()
        spec = protocol.room_spec(protocol.payload(args))
        return self._ok("create_room", self.ws.rooms.create(conn, spec))

    def join_room(self, *args: Any) -> dict[str, Any]:
        conn = self._begin()
        room = protocol.room_name(protocol.payload(args))
        return self._ok("join_room", self.ws.rooms.join(conn, room))

    def leave_room(self, *args: Any) -> dict[str, Any]:
        conn = self._begin()
        room = protocol.room_name(protocol.payload(args))
        return self._ok("leave_room", self.ws.rooms.leave(conn, room))

    def room_message(self, *args: Any) -> dict[str, Any]:
        conn = self._begin()
        data = protocol.payload(args)
        room = protocol.room_name(data)
        message = protocol.message_body(data)
        return self._ok("room_message", self.ws.rooms.message(conn, room, message))

    def list_rooms(self, *args: Any) -> dict[str, Any]:
        conn = self._begin()
        protocol.payload(args, optional=True)
        return self._ok("list_rooms", {"rooms": self.ws.rooms.store.rooms(conn.member)})

    def room_members(self, *args: Any) -> dict[str, Any]:
        conn = self._begin()
        room = protocol.room_name(protocol.payload(args))
        return self._ok("room_members", {"room": room, "members": self.ws.rooms.members(room, conn.member)})

    def unknown(self, event: Any, *_args: Any) -> dict[str, Any]:
        """Any event without a handler: counted against the limit, then ``not_found``."""
        self._begin()
        raise NotFound(f"unknown event {str(event)[:64]!r}; events: {', '.join(protocol.EVENTS)}")

    # -- the error boundary -----------------------------------------------------------------
    def boundary(self, exc: Exception) -> Any:
        """Flask-SocketIO's ``on_error_default``: the one place an event's error is answered."""
        event = request.event["message"]  # type: ignore[attr-defined]  # set by Flask-SocketIO
        if event == "connect":  # never accept a connect whose handler failed
            logger.error("websocket: connect handler raised %s", type(exc).__name__, exc_info=exc)
            return False
        if isinstance(exc, HTTPError):
            body = protocol.error_body(exc)
        else:
            # An unexpected exception: logged with its traceback, answered with the generic error.
            logger.error("websocket: event %r raised", event, exc_info=exc)
            body = protocol.error_body(InternalError())
        metrics.WS_EVENTS.labels(event if event in protocol.EVENTS else "unknown", body["code"]).inc()
        sid = request.sid  # type: ignore[attr-defined]
        self.ws.socketio.server.emit("error", body, to=sid, namespace=NAMESPACE, ignore_queue=True)
        return {"ok": False, "error": body}


def install(app: Flask) -> None:
    """Register the connect and event handlers and the error boundary on ``am.websocket``."""
    am: AppManager = app.extensions["keel"]
    handlers = Handlers(app, am)
    sio = am.websocket.socketio
    sio.on("connect")(handlers.connect)
    sio.on("disconnect")(handlers.disconnect)
    for event in protocol.EVENTS:
        sio.on(event)(getattr(handlers, event))
    sio.on("*")(handlers.unknown)
    sio.on_error_default(handlers.boundary)
