-- An agent's policy gate before an event starts: its rate limit and its cap on events in
-- flight across the cluster ([agents.<name>] rate_limit, max_concurrency).
-- KEYS: the rate key (or ""), the slots sorted set (or "").
-- ARGV: now (s), rate (events/s), event id, cap, slot lease expiry (s).
-- Returns "0" when the event may start (its slot is taken), else the seconds to wait for
-- the rate, or "-1" when the cap is reached. Nothing is taken unless both allow it.
local now = tonumber(ARGV[1])
local tat = now
local interval = 0
if KEYS[1] ~= '' then
  local rate = tonumber(ARGV[2])
  interval = 1 / rate
  local burst = math.max(1, rate) * interval
  tat = math.max(tonumber(redis.call('GET', KEYS[1]) or now), now)
  local over = tat - now + interval - burst
  if over > 0 then return tostring(over) end
end
if KEYS[2] ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if not redis.call('ZSCORE', KEYS[2], ARGV[3]) and
      redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then
    return '-1'
  end
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[3])
end
if KEYS[1] ~= '' then
  redis.call('SET', KEYS[1], tostring(tat + interval), 'PX', math.ceil((tat + interval - now) * 1000) + 1000)
end
return '0'
