-- One of a tenant's events ended: free its slot, and queue the tenant's parked events
-- while it is under its cap (oldest first).
-- KEYS: the tenant's slots (sorted set), its parked list, the set of queues pushed to.
-- ARGV: event id, now, cap, expire_at (of an unparked event's slot), wake prefix, wake limit.
-- Returns how many parked events were queued.
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local cap = tonumber(ARGV[3])
local limit = tonumber(ARGV[6])
local moved = 0
while redis.call('ZCARD', KEYS[1]) < cap do
  local entry = redis.call('LPOP', KEYS[2])
  if not entry then break end
  local a = string.find(entry, '\n', 1, true)
  local b = string.find(entry, '\n', a + 1, true)
  local id, queue, msg = string.sub(entry, 1, a - 1), string.sub(entry, a + 1, b - 1),
    string.sub(entry, b + 1)
  redis.call('ZADD', KEYS[1], ARGV[4], id)
  redis.call('LPUSH', queue, msg)
  redis.call('SADD', KEYS[3], queue)
  local bell = ARGV[5] .. queue
  redis.call('LPUSH', bell, 1)
  redis.call('LTRIM', bell, 0, limit - 1)
  moved = moved + 1
end
return moved
