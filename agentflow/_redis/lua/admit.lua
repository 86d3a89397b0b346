-- The producer's admission: push events unless the bounds are reached, in one step.
-- KEYS: inflight, queue, doorbell, the set of queues pushed to, and for a capped tenant
--       its slots (sorted set) and parked list.
-- ARGV: now, expire_at, max_inflight, max_queued, n, id1, msg1, ..., idn, msgn, ring_limit,
--       and for a capped tenant its cap
-- Returns {admitted, inflight, queued}. An admitted event of a tenant at its cap is parked
-- (its id, queue and message on the tenant's list) instead of queued; a worker moves it to
-- the queue when one of the tenant's events ends (lua/tenant_release.lua).
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local inflight = redis.call('ZCARD', KEYS[1])
local queued = redis.call('LLEN', KEYS[2])
local n = tonumber(ARGV[5])
local room = math.min(tonumber(ARGV[3]) - inflight, tonumber(ARGV[4]) - queued, n)
if room <= 0 then return {0, inflight, queued} end
local tenant = #KEYS >= 6
local cap = tonumber(ARGV[7 + 2 * n])
local taken = 0
if tenant then
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', ARGV[1])
  taken = redis.call('ZCARD', KEYS[5])
end
local pushed = 0
for i = 1, room do
  local id, msg = ARGV[4 + 2 * i], ARGV[5 + 2 * i]
  redis.call('ZADD', KEYS[1], ARGV[2], id)
  if tenant and taken >= cap then
    redis.call('RPUSH', KEYS[6], id .. '\n' .. KEYS[2] .. '\n' .. msg)
  else
    if tenant then
      redis.call('ZADD', KEYS[5], ARGV[2], id)
      taken = taken + 1
    end
    redis.call('LPUSH', KEYS[2], msg)
    pushed = pushed + 1
  end
end
if pushed > 0 then
  local limit = tonumber(ARGV[6 + 2 * n])
  for _ = 1, math.min(pushed, limit) do redis.call('LPUSH', KEYS[3], 1) end
  redis.call('LTRIM', KEYS[3], 0, limit - 1)
  redis.call('SADD', KEYS[4], KEYS[2])
end
return {room, inflight, queued}
