"""Rooms, membership and presence in Redis: every instance answers for the whole cluster.

The rules are those of :class:`core.websocket.store.MemoryRoomStore`; each operation is one Lua
script (atomic: two instances joining the last free place of a room cannot both get it). Keys,
under ``REDIS_KEY_PREFIX`` + ``ws:``:

- ``r:<room>`` — the room (JSON ``{private, max, auto}``); expires while a created room is empty;
- ``a:<room>`` — a private room's allowed member keys (a set);
- ``m:<room>`` — member key → its connections in the room, cluster-wide (a hash);
- ``n:<room>`` — member key → its ``{"user_id", "username"}`` (a hash);
- ``rooms`` — the room names (a set; names whose room expired are pruned when listed);
- ``node:<node>`` — ``<room>\\n<member>`` → that process's connections (a hash): what to take
  back when the process dies;
- ``nodes`` — process → its last heartbeat in ms (a sorted set). A process missing its
  heartbeats for ``WS_PRESENCE_TTL`` seconds is dead: the next :meth:`RedisRoomStore.sweep` of
  any process removes its memberships and announces who left.

Redis down: the calls raise :class:`~core.errors.ServiceUnavailable` (the event is answered
``service_unavailable``); a connection's memberships are taken back when it closes.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from core.data.redis_backends import REDIS_DOWN
from core.errors import ServiceUnavailable
from core.websocket.store import EMPTY_ROOM_TTL, OK, JoinResult, MembersResult, RoomMeta, sort_members

if TYPE_CHECKING:
    from core.managers.redis import RedisManager

_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
redis.call('DEL', KEYS[2])
if #ARGV > 3 then
  redis.call('SADD', KEYS[2], unpack(ARGV, 4))
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
redis.call('SADD', KEYS[3], ARGV[1])
return 1
"""

# KEYS: r, a, m, n, rooms, node hash, nodes; ARGV: room, member, display, node field,
# auto_create, auto meta, now ms, node
_JOIN = """
local meta = redis.call('GET', KEYS[1])
if not meta then
  if ARGV[5] ~= '1' then return {'not_found'} end
  meta = ARGV[6]
  redis.call('SET', KEYS[1], meta)
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
  redis.call('SADD', KEYS[5], ARGV[1])
end
local m = cjson.decode(meta)
if m['private'] == 1 and redis.call('SISMEMBER', KEYS[2], ARGV[2]) == 0 then return {'forbidden'} end
local n = tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '0')
if n <= 0 and m['max'] > 0 and redis.call('HLEN', KEYS[3]) >= m['max'] then return {'full'} end
redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
redis.call('HSET', KEYS[4], ARGV[2], ARGV[3])
redis.call('HINCRBY', KEYS[6], ARGV[4], 1)
redis.call('PERSIST', KEYS[1])
redis.call('PERSIST', KEYS[2])
if not redis.call('ZSCORE', KEYS[7], ARGV[8]) then redis.call('ZADD', KEYS[7], ARGV[7], ARGV[8]) end
local first = 0
if n <= 0 then first = 1 end
return {'ok', first, redis.call('HVALS', KEYS[4])}
"""

# KEYS: r, a, m, n, rooms, node hash; ARGV: room, member, node field, empty ttl
_LEAVE = """
local c = redis.call('HINCRBY', KEYS[6], ARGV[3], -1)
if c <= 0 then redis.call('HDEL', KEYS[6], ARGV[3]) end
if c < 0 then return false end
local n = redis.call('HINCRBY', KEYS[3], ARGV[2], -1)
if n > 0 then return false end
local display = redis.call('HGET', KEYS[4], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('HDEL', KEYS[4], ARGV[2])
if redis.call('HLEN', KEYS[3]) == 0 then
  local meta = redis.call('GET', KEYS[1])
  if (not meta) or cjson.decode(meta)['auto'] == 1 then
    redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
    redis.call('SREM', KEYS[5], ARGV[1])
  else
    redis.call('EXPIRE', KEYS[1], ARGV[4])
    redis.call('EXPIRE', KEYS[2], ARGV[4])
  end
end
if n < 0 or not display then return false end
return display
"""

# KEYS: r, a, n; ARGV: member ('' = the server: sees every room)
_MEMBERS = """
local meta = redis.call('GET', KEYS[1])
if not meta then return {'not_found'} end
if ARGV[1] ~= '' and cjson.decode(meta)['private'] == 1 and redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 then
  return {'forbidden'}
end
return {'ok', redis.call('HVALS', KEYS[3])}
"""

# KEYS: rooms; ARGV: key base, member ('' = the server: sees every room)
_LIST = """
local out = {}
for _, room in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local meta = redis.call('GET', ARGV[1] .. 'r:' .. room)
  if not meta then
    redis.call('SREM', KEYS[1], room)
  else
    local m = cjson.decode(meta)
    if ARGV[2] == '' or m['private'] ~= 1 or redis.call('SISMEMBER', ARGV[1] .. 'a:' .. room, ARGV[2]) == 1 then
      table.insert(out, {room, m['private'], redis.call('HLEN', ARGV[1] .. 'm:' .. room), m['max']})
    end
  end
end
return out
"""

# Take back every membership of a process (its node hash) and announce who left.
# KEYS: nodes; ARGV: key base, node, mode ('dead': forget it; 'alive': register it, now ms), empty ttl
_SWEEP = """
local base, node = ARGV[1], ARGV[2]
local hkey = base .. 'node:' .. node
local left = {}
local fields = redis.call('HGETALL', hkey)
for i = 1, #fields, 2 do
  local sep = string.find(fields[i], '\\n', 1, true)
  local room, member = string.sub(fields[i], 1, sep - 1), string.sub(fields[i], sep + 1)
  local mkey, nkey = base .. 'm:' .. room, base .. 'n:' .. room
  local n = redis.call('HINCRBY', mkey, member, -tonumber(fields[i + 1]))
  if n <= 0 then
    local display = redis.call('HGET', nkey, member)
    redis.call('HDEL', mkey, member)
    redis.call('HDEL', nkey, member)
    if display and ARGV[3] == 'dead' then table.insert(left, {room, display}) end
    if redis.call('HLEN', mkey) == 0 then
      local rkey, akey = base .. 'r:' .. room, base .. 'a:' .. room
      local meta = redis.call('GET', rkey)
      if (not meta) or cjson.decode(meta)['auto'] == 1 then
        redis.call('DEL', rkey, akey, mkey, nkey)
        redis.call('SREM', base .. 'rooms', room)
      else
        redis.call('EXPIRE', rkey, ARGV[5])
        redis.call('EXPIRE', akey, ARGV[5])
      end
    end
  end
end
redis.call('DEL', hkey)
if ARGV[3] == 'dead' then redis.call('ZREM', KEYS[1], node) else redis.call('ZADD', KEYS[1], ARGV[4], node) end
return left
"""

# KEYS: nodes; ARGV: node, now ms. 1 when the node was not registered (then nothing is done).
_BEAT = """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 1 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 0
"""


class RedisRoomStore:
    """Rooms in Redis for process ``node`` (see the module docstring)."""

    def __init__(self, redis: RedisManager, node: str, ttl_s: float, empty_ttl: int = EMPTY_ROOM_TTL) -> None:
        client = redis.client
        assert client is not None, "RedisRoomStore needs REDIS_URL"
        self._redis = redis
        self.node = node
        self.ttl_ms = int(ttl_s * 1000)
        self.empty_ttl = empty_ttl
        self.base = redis.key("ws", "")
        self._nodes = self.base + "nodes"
        self._node_key = self.base + "node:" + node
        self._create = client.register_script(_CREATE)
        self._join = client.register_script(_JOIN)
        self._leave = client.register_script(_LEAVE)
        self._members = client.register_script(_MEMBERS)
        self._list = client.register_script(_LIST)
        self._sweep = client.register_script(_SWEEP)
        self._beat = client.register_script(_BEAT)

    def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return self._redis.breaker.call(script, keys=keys, args=args)
        except REDIS_DOWN:
            raise ServiceUnavailable("Rooms are unavailable: Redis does not answer.", retry_after=1) from None

    def _room_keys(self, room: str) -> list[str]:
        b = self.base
        return [b + "r:" + room, b + "a:" + room, b + "m:" + room, b + "n:" + room, b + "rooms"]

    def create(self, room: str, meta: RoomMeta, allowed: list[str]) -> bool:
        keys = self._room_keys(room)
        args = [room, meta.dump(), self.empty_ttl, *allowed]
        return bool(self._call(self._create, [keys[0], keys[1], keys[4]], args))

    def join(self, room: str, member: str, display: dict[str, Any], auto_create: bool) -> JoinResult:
        args = [
            room,
            member,
            _dump(display),
            room + "\n" + member,
            "1" if auto_create else "0",
            RoomMeta(False, 0, True).dump(),
            _now_ms(),
            self.node,
        ]
        reply = self._call(self._join, [*self._room_keys(room), self._node_key, self._nodes], args)
        status = _text(reply[0])
        if status != OK:
            return JoinResult(status)
        return JoinResult(OK, bool(reply[1]), sort_members([json.loads(v) for v in reply[2]]))

    def leave(self, room: str, member: str) -> dict[str, Any] | None:
        reply = self._call(
            self._leave, [*self._room_keys(room), self._node_key], [room, member, room + "\n" + member, self.empty_ttl]
        )
        return json.loads(reply) if reply else None

    def members(self, room: str, member: str | None) -> MembersResult:
        keys = self._room_keys(room)
        reply = self._call(self._members, [keys[0], keys[1], keys[3]], [member or ""])
        status = _text(reply[0])
        if status != OK:
            return MembersResult(status)
        return MembersResult(OK, sort_members([json.loads(v) for v in reply[1]]))

    def rooms(self, member: str | None) -> list[dict[str, Any]]:
        rows = self._call(self._list, [self.base + "rooms"], [self.base, member or ""])
        out = [
            {"room": _text(r[0]), "private": bool(r[1]), "members": int(r[2]), "max_members": int(r[3]) or None}
            for r in rows
        ]
        return sorted(out, key=lambda r: r["room"])

    def heartbeat(self) -> bool:
        """Beat; a process that was not registered first takes back whatever its node hash
        holds (memberships made after it was swept) and registers, so that the caller can
        join all its connections again without counting any twice."""
        if not self._call(self._beat, [self._nodes], [self.node, _now_ms()]):
            return False
        self._call(self._sweep, [self._nodes], [self.base, self.node, "alive", _now_ms(), self.empty_ttl])
        return True

    def sweep(self) -> list[tuple[str, dict[str, Any]]]:
        try:
            dead = self._redis.breaker.call(
                self._redis_client().zrangebyscore, self._nodes, "-inf", _now_ms() - self.ttl_ms, start=0, num=20
            )
        except REDIS_DOWN:
            raise ServiceUnavailable("Redis does not answer.", retry_after=1) from None
        left: list[tuple[str, dict[str, Any]]] = []
        for raw in dead:
            node = _text(raw)
            if node == self.node:
                continue  # this process is alive: its own beat re-registers it
            for room, display in self._call(self._sweep, [self._nodes], [self.base, node, "dead", 0, self.empty_ttl]):
                left.append((_text(room), json.loads(display)))
        return left

    def forget_node(self) -> None:
        self._call(self._sweep, [self._nodes], [self.base, self.node, "dead", 0, self.empty_ttl])

    def _redis_client(self) -> Any:
        return self._redis.client


def _now_ms() -> int:
    return int(time.time() * 1000)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
