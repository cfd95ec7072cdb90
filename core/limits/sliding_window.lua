-- Keel limiter: bans, every limit of a request and the token deny-list in ONE round trip.
-- Algorithm: sliding log. Each limit key is a sorted set of admitted requests scored by the
-- Redis server time in ms; a request is admitted when, for every tier (limit L, window W),
-- fewer than L entries are newer than now - W. Exact: never more than L in any rolling W.
-- Rejected requests are not logged. Everything runs atomically inside this script.
--
-- KEYS: per identity i = 1..n_id: ban, viol, strikes (3 keys); then n_rev revocation keys;
--       then n_lim limit logs.
-- ARGV: nonce, n_id, n_rev, n_lim, ban_after, ban_window_ms, ban_base_ms, ban_max_ms,
--       strike_memory_ms, force_violation (1-based identity, 0 = none),
--       then per limit: blame (1-based identity, 0 = none), n_tiers, n_tiers x (limit, window_ms).
-- Returns {status, identity, ms, now_ms, {revocation values}, {flat states}, strikes, rejected_limit}
-- status: 0 admitted, 1 banned, 2 rejected, 3 newly banned; identity and limits are 1-based (0 = none);
-- states: (limit, tier, remaining, reset_ms)*, reset_ms -1 = not looked up (not the tightest tier)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local nonce = ARGV[1]
local n_id, n_rev, n_lim = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local ban_after, ban_window = tonumber(ARGV[5]), tonumber(ARGV[6])
local ban_base, ban_max, strike_memory = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local force = tonumber(ARGV[10])

for i = 1, n_id do
  local ttl = redis.call('PTTL', KEYS[3 * i - 2])
  if ttl > 0 or ttl == -1 then
    if ttl == -1 then ttl = ban_max end
    return {1, i, ttl, now, {}, {}, 0, 0}
  end
end

local rev = {}
for i = 1, n_rev do
  rev[i] = redis.call('GET', KEYS[3 * n_id + i])
end

local base = 3 * n_id + n_rev
local argi = 11
local rejected, blame, retry = 0, 0, 0
local states = {}
local maxws = {}
-- the tightest tier (fewest remaining, then the longest window) is the one whose reset the
-- headers report; only it and the refused tiers need the oldest entry looked up
local best, best_rem, best_w, best_since, best_key = 0, 0, 0, '', ''
for l = 1, n_lim do
  local key = KEYS[base + l]
  local lb, nt = tonumber(ARGV[argi]), tonumber(ARGV[argi + 1])
  argi = argi + 2
  local tiers, maxw = {}, 0
  for k = 1, nt do
    local lim, w = tonumber(ARGV[argi]), tonumber(ARGV[argi + 1])
    argi = argi + 2
    tiers[k] = {lim, w}
    if w > maxw then maxw = w end
  end
  maxws[l] = maxw
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - maxw)
  for k = 1, nt do
    local lim, w = tiers[k][1], tiers[k][2]
    local since = '(' .. (now - w)
    local count
    if w == maxw then count = redis.call('ZCARD', key) else count = redis.call('ZCOUNT', key, since, '+inf') end
    local remaining, reset = lim - count - 1, -1
    if count >= lim then
      remaining, reset = 0, w
      local e = redis.call('ZRANGEBYSCORE', key, since, '+inf', 'WITHSCORES', 'LIMIT', count - lim, 1)
      if e[2] then reset = tonumber(e[2]) + w - now end
      if rejected == 0 then rejected, blame = l, lb end
      if reset > retry then retry = reset end
    end
    local s = #states
    states[s + 1], states[s + 2], states[s + 3], states[s + 4] = l, k, remaining, reset
    if best == 0 or remaining < best_rem or (remaining == best_rem and w > best_w) then
      best, best_rem, best_w, best_since, best_key = s + 4, remaining, w, since, key
    end
  end
end
if best > 0 and states[best] < 0 then
  local reset = best_w
  local e = redis.call('ZRANGEBYSCORE', best_key, best_since, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if e[2] then reset = tonumber(e[2]) + best_w - now end
  states[best] = reset
end

local who = blame
if force > 0 then who = force end
if (rejected > 0 or force > 0) and who > 0 then
  local vkey = KEYS[3 * who - 1]
  redis.call('ZADD', vkey, now, nonce)
  redis.call('ZREMRANGEBYSCORE', vkey, '-inf', now - ban_window)
  redis.call('PEXPIRE', vkey, ban_window)
  if redis.call('ZCARD', vkey) >= ban_after then
    local skey = KEYS[3 * who]
    local strikes = redis.call('INCR', skey)
    local dur = ban_base
    for _ = 2, strikes do
      dur = dur * 2
      if dur >= ban_max then break end
    end
    if dur > ban_max then dur = ban_max end
    redis.call('SET', KEYS[3 * who - 2], now + dur, 'PX', dur)
    redis.call('PEXPIRE', skey, dur + strike_memory)
    redis.call('DEL', vkey)
    return {3, who, dur, now, rev, states, strikes, rejected}
  end
end
if rejected > 0 then
  return {2, blame, retry, now, rev, states, 0, rejected}
end

for l = 1, n_lim do
  local key = KEYS[base + l]
  redis.call('ZADD', key, now, nonce)
  redis.call('PEXPIRE', key, maxws[l])
end
return {0, 0, 0, now, rev, states, 0, 0}
