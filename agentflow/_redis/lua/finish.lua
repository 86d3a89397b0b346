-- An event finishes: store its result and apply its state delta, once, atomically.
-- KEYS: done, claim, inflight, state (or ""), meta (Celery's result key, or ""),
--       unacked, unacked_index (kombu's, or ""), cancel.
-- ARGV: result, result_ttl, event_id, state_ttl, meta_head, meta_tail, meta_ttl,
--       delivery_tag, run_id (this run's claim), nset, k1, v1, ..., ndel, k..., nincr, k, n, ...
-- Returns {0} when this run's result stands, {1, result} when another run finished first
-- (its result stands; this run's delta is not applied), {2} when the event was cancelled
-- (nothing is stored or applied; the caller marks it revoked).
-- With a meta key it also writes Celery's result entry (head .. result .. tail) and
-- publishes it, as Celery's Redis backend does. With kombu's unacked keys it also settles
-- the message (what kombu's ack would do next).
local existing = redis.call('GET', KEYS[1])
local function release()
  if redis.call('GET', KEYS[2]) == ARGV[9] then redis.call('DEL', KEYS[2]) end
end
if (not existing) and redis.call('EXISTS', KEYS[8]) == 1 then
  release()
  redis.call('ZREM', KEYS[3], ARGV[3])
  return {2}
end
redis.call('ZREM', KEYS[3], ARGV[3])
if KEYS[6] ~= '' then
  redis.call('HDEL', KEYS[6], ARGV[8])
  redis.call('ZREM', KEYS[7], ARGV[8])
end
local stored = existing or ARGV[1]
if KEYS[5] ~= '' then
  local meta = ARGV[5] .. stored .. ARGV[6]
  redis.call('SET', KEYS[5], meta, 'EX', ARGV[7])
  redis.call('PUBLISH', KEYS[5], meta)
end
release()
if existing then return {1, existing} end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if KEYS[4] ~= '' then
  local i = 10
  local nset = tonumber(ARGV[i]); i = i + 1
  for _ = 1, nset do
    redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1]); i = i + 2
  end
  local ndel = tonumber(ARGV[i]); i = i + 1
  for _ = 1, ndel do
    redis.call('HDEL', KEYS[4], ARGV[i]); i = i + 1
  end
  local nincr = tonumber(ARGV[i]); i = i + 1
  for _ = 1, nincr do
    redis.call('HINCRBY', KEYS[4], ARGV[i], ARGV[i + 1]); i = i + 2
  end
  if nset + ndel + nincr > 0 then
    redis.call('HINCRBY', KEYS[4], '__v', 1)
    redis.call('EXPIRE', KEYS[4], ARGV[4])
  end
end
return {0}
