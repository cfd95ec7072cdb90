"""Socket.IO rooms (SPEC §8): the parts behind ``am.websocket`` (``core/managers/websocket.py``).

- :mod:`core.websocket.protocol` — what a client may send: room names, payload shapes, the
  4 KiB message limit, the frame limit, the answer and error shapes;
- :mod:`core.websocket.connections` — this process's connections: the identity bound to each
  at connect (never read from a payload) and the rooms it joined; who a forced disconnect hits;
- :mod:`core.websocket.store` — rooms, membership and presence: the interface and its
  in-process twin (no ``REDIS_URL``); :mod:`core.websocket.redis_store` — the same in Redis,
  cluster-wide, one Lua script per operation;
- :mod:`core.websocket.rooms` — the room operations: store, Socket.IO room, ``presence`` events
  and the ``room_joined``/``room_left`` hooks;
- :mod:`core.websocket.presence` — the heartbeat that keeps this process's members alive and
  removes those of a process that died;
- :mod:`core.websocket.events` — the transport: connect authentication (the HTTP guard's code
  path), the client events, and the one error boundary (``on_error_default``). It uses
  ``core.http``, so the app factory installs it (``install(app)``) once the managers exist.
"""
