"""The heartbeat of this process's memberships (SPEC §8: a crashed instance's members
disappear within 30 s).

Every ``WS_PRESENCE_TTL / 3`` seconds a background thread (a greenlet under gevent) marks this
process alive and sweeps the processes that missed their heartbeats for ``WS_PRESENCE_TTL``
seconds: their members leave their rooms and ``presence`` ``left`` is announced. A member of
a process that died is therefore gone after at most ``WS_PRESENCE_TTL`` + one period (20 s by
default). Without Redis there is nothing to sweep and no thread.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from core.errors import ServiceUnavailable

if TYPE_CHECKING:
    from core.websocket.connections import Registry
    from core.websocket.rooms import Rooms

logger = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, rooms: Rooms, registry: Registry, period: float) -> None:
        self.rooms = rooms
        self.registry = registry
        self.period = period
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._down = False  # Redis was down at the last beat (log once per outage)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="keel-ws-heartbeat", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout=3)

    def _run(self) -> None:
        # The first beat after one period: a process registers itself with its first
        # membership (the join script does), so there is nothing to keep alive before.
        while not self._stop.wait(self.period):
            self.beat()

    def beat(self) -> None:
        """One heartbeat and sweep (also called by tests)."""
        store = self.rooms.store
        try:
            if store.heartbeat():
                self.rooms.rejoin(self.registry.all())
            self.rooms.retry_leaves()
            for room, user in store.sweep():
                self.rooms.announce(room, user, "left")
        except ServiceUnavailable:
            if not self._down:
                logger.warning("websocket presence: Redis does not answer; heartbeats resume when it does")
            self._down = True
            return
        except Exception:
            # The heartbeat must keep running: a failed beat is retried at the next period.
            logger.exception("websocket presence: heartbeat failed")
            return
        if self._down:
            logger.warning("websocket presence: Redis answers again")
        self._down = False
