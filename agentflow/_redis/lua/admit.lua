-- The producer's admission: push events unless the bounds are reached, in one step.
-- KEYS: inflight, queue, doorbell, the set of queues pushed to.
-- ARGV: now, expire_at, max_inflight, max_queued, n, id1, msg1, ..., idn, msgn, ring_limit
-- Returns {admitted, inflight, queued}.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local inflight = redis.call('ZCARD', KEYS[1])
local queued = redis.call('LLEN', KEYS[2])
local room = math.min(tonumber(ARGV[3]) - inflight, tonumber(ARGV[4]) - queued, tonumber(ARGV[5]))
if room <= 0 then return {0, inflight, queued} end
for i = 1, room do
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4 + 2 * i])
  redis.call('LPUSH', KEYS[2], ARGV[5 + 2 * i])
end
local limit = tonumber(ARGV[6 + 2 * tonumber(ARGV[5])])
for _ = 1, math.min(room, limit) do redis.call('LPUSH', KEYS[3], 1) end
redis.call('LTRIM', KEYS[3], 0, limit - 1)
redis.call('SADD', KEYS[4], KEYS[2])
return {room, inflight, queued}
