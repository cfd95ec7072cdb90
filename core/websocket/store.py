"""Rooms, membership and presence: the interface, and its in-process twin (SPEC §8).

A room has a name, ``private`` (only the members it lists may join), ``max_members`` (0: no
limit) and its members. A member is a user (``"user:<id>"``; every connection of the user, API
keys it owns included, is that one member) or an API key without an owner. The store counts
each member's connections in each room, so a member joins on its first connection and leaves
on its last: :meth:`RoomStore.join` says ``first``, :meth:`RoomStore.leave` returns who left.

Rooms made by ``create_room`` outlive being empty for :data:`EMPTY_ROOM_TTL` (so that a private
room made for others is there when they come); rooms created by joining an unknown name
disappear with their last member.

:class:`MemoryRoomStore` serves one process (no ``REDIS_URL``); the cluster-wide one is
:class:`core.websocket.redis_store.RedisRoomStore`, which also tracks which process holds which
membership so that the members of a process that died are removed (:meth:`RoomStore.sweep`).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

EMPTY_ROOM_TTL = 3600  # seconds a created room stays without members

OK, NOT_FOUND, FORBIDDEN, FULL = "ok", "not_found", "forbidden", "full"


@dataclass(frozen=True)
class JoinResult:
    status: str  # ok | not_found | forbidden | full
    first: bool = False  # the member's first connection in the room: announce it
    members: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class MembersResult:
    status: str  # ok | not_found | forbidden
    members: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class RoomMeta:
    private: bool
    max_members: int
    auto: bool  # created by a join (gone with its last member)

    def dump(self) -> str:
        return json.dumps({"private": int(self.private), "max": self.max_members, "auto": int(self.auto)})


class RoomStore(Protocol):
    """What :class:`core.websocket.rooms.Rooms` needs; ``member`` is a member key, ``display``
    its ``{"user_id", "username"}``."""

    def create(self, room: str, meta: RoomMeta, allowed: list[str]) -> bool:
        """Create ``room`` (False when the name exists); ``allowed`` may join a private one."""

    def join(self, room: str, member: str, display: dict[str, Any], auto_create: bool) -> JoinResult: ...

    def leave(self, room: str, member: str) -> dict[str, Any] | None:
        """One connection of ``member`` left ``room``; its display when that was its last."""

    def members(self, room: str, member: str | None) -> MembersResult:
        """The members of ``room``, as seen by ``member`` (``None``: the server sees all)."""

    def rooms(self, member: str | None) -> list[dict[str, Any]]:
        """``[{room, private, members, max_members}]`` visible to ``member`` (``None``: the
        server sees every room, private ones too)."""

    def heartbeat(self) -> bool:
        """Mark this process alive; True when it was not registered (first beat, or its
        memberships were swept while it stalled): the caller joins its connections again."""

    def sweep(self) -> list[tuple[str, dict[str, Any]]]:
        """Remove the memberships of dead processes; ``(room, display)`` of members who left."""

    def forget_node(self) -> None:
        """This process stops: drop its liveness record (its memberships were left)."""


def sort_members(members: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Members in one order on every instance: by user id, then name."""
    return sorted(members, key=lambda m: (m.get("user_id") is None, m.get("user_id") or 0, str(m.get("username"))))


@dataclass
class _Room:
    meta: RoomMeta
    allowed: set[str]
    counts: dict[str, int] = field(default_factory=dict)
    display: dict[str, dict[str, Any]] = field(default_factory=dict)
    empty_since: float | None = None


class MemoryRoomStore:
    """The store for one process (no Redis): the same rules as the Redis store."""

    def __init__(self, empty_ttl: float = EMPTY_ROOM_TTL) -> None:
        self._lock = threading.Lock()
        self._rooms: dict[str, _Room] = {}
        self._empty_ttl = empty_ttl

    def _live(self, room: str) -> _Room | None:
        """Under the lock: the room, unless it expired while empty."""
        state = self._rooms.get(room)
        since = state.empty_since if state is not None else None
        if since is not None and time.monotonic() - since > self._empty_ttl:
            del self._rooms[room]
            return None
        return state

    def create(self, room: str, meta: RoomMeta, allowed: list[str]) -> bool:
        with self._lock:
            if self._live(room) is not None:
                return False
            self._rooms[room] = _Room(meta, set(allowed), empty_since=time.monotonic())
            return True

    def join(self, room: str, member: str, display: dict[str, Any], auto_create: bool) -> JoinResult:
        with self._lock:
            state = self._live(room)
            if state is None:
                if not auto_create:
                    return JoinResult(NOT_FOUND)
                state = self._rooms[room] = _Room(RoomMeta(False, 0, True), set())
            if state.meta.private and member not in state.allowed:
                return JoinResult(FORBIDDEN)
            count = state.counts.get(member, 0)
            if count == 0 and state.meta.max_members and len(state.counts) >= state.meta.max_members:
                return JoinResult(FULL)
            state.counts[member] = count + 1
            state.display[member] = display
            state.empty_since = None
            return JoinResult(OK, count == 0, sort_members(list(state.display.values())))

    def leave(self, room: str, member: str) -> dict[str, Any] | None:
        with self._lock:
            state = self._rooms.get(room)
            if state is None or member not in state.counts:
                return None
            state.counts[member] -= 1
            if state.counts[member] > 0:
                return None
            del state.counts[member]
            display = state.display.pop(member, None)
            if not state.counts:
                if state.meta.auto:
                    del self._rooms[room]
                else:
                    state.empty_since = time.monotonic()
            return display

    def members(self, room: str, member: str | None) -> MembersResult:
        with self._lock:
            state = self._live(room)
            if state is None:
                return MembersResult(NOT_FOUND)
            if member is not None and state.meta.private and member not in state.allowed:
                return MembersResult(FORBIDDEN)
            return MembersResult(OK, sort_members(list(state.display.values())))

    def rooms(self, member: str | None) -> list[dict[str, Any]]:
        with self._lock:
            out = []
            for name in list(self._rooms):
                state = self._live(name)
                if state is not None and (member is None or not state.meta.private or member in state.allowed):
                    out.append(_info(name, state.meta, len(state.counts)))
            return sorted(out, key=lambda r: r["room"])

    def heartbeat(self) -> bool:
        return False  # one process: nothing can sweep it

    def sweep(self) -> list[tuple[str, dict[str, Any]]]:
        return []

    def forget_node(self) -> None:
        """Nothing is shared."""


def _info(room: str, meta: RoomMeta, count: int) -> dict[str, Any]:
    return {"room": room, "private": meta.private, "members": count, "max_members": meta.max_members or None}
