-- The scheduler's step: move due entries to their queues, each exactly once (the entry
-- leaves the set in the same step that pushes it; a script runs alone, so workers racing
-- each move a disjoint part).
-- KEYS: scheduled, items, the set of queues pushed to, clock offset ('' unless the
--       test-only clock hook is on), inflight.
-- ARGV: now, limit, inflight_expire_at, wake_prefix, wake_limit.
-- An entry is {"q": queue, "m": item, "i": event id} or, for a wait's timeout, also
-- {"g": wait record, "t": token}: it is pushed only while that wait is on (a signal that
-- came first has ended it), and ends it in the same step.
-- Returns {moved, dropped}.
local now = tonumber(ARGV[1])
if KEYS[4] ~= '' then now = now + (tonumber(redis.call('GET', KEYS[4])) or 0) end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local ring_limit = tonumber(ARGV[5])
local moved, dropped = 0, 0
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  local raw = redis.call('HGET', KEYS[2], member)
  redis.call('HDEL', KEYS[2], member)
  local ok, entry = false, nil
  if raw then
    ok, entry = pcall(cjson.decode, raw)
    ok = ok and type(entry) == 'table' and type(entry.q) == 'string' and type(entry.m) == 'string'
  end
  if ok and type(entry.g) == 'string' then
    if redis.call('HGET', entry.g, 'status') == 'waiting'
        and redis.call('HGET', entry.g, 'token') == entry.t then
      redis.call('HSET', entry.g, 'status', 'resumed')
    else
      ok = false
    end
  end
  if ok then
    redis.call('LPUSH', entry.q, entry.m)
    local wake = ARGV[4] .. entry.q
    redis.call('LPUSH', wake, 1)
    redis.call('LTRIM', wake, 0, ring_limit - 1)
    redis.call('SADD', KEYS[3], entry.q)
    if type(entry.i) == 'string' then redis.call('ZADD', KEYS[5], ARGV[3], entry.i) end
    moved = moved + 1
  else
    dropped = dropped + 1
  end
end
return {moved, dropped}
