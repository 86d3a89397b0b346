-- An event finishes: store its result and apply its state delta, once, atomically.
-- KEYS: done, claim, inflight, state (or ""), meta (Celery's result key, or ""),
--       unacked, unacked_index (kombu's, or ""), cancel, the set of queues pushed to,
--       then a (queue, doorbell) pair per chained event.
-- ARGV: result, result_ttl, event_id, state_ttl, meta_head, meta_tail, meta_ttl,
--       delivery_tag, run_id (this run's claim), nnext, inflight_expire_at, wake_limit,
--       id1, msg1, ... (nnext chained events), nset, k1, v1, ..., ndel, k..., nincr, k, n, ...
-- Returns {0} when this run's result stands, {1, result} when another run finished first
-- (its result stands; this run's delta is not applied), {2} when the event was cancelled
-- (nothing is stored or applied; the caller marks it revoked).
-- With a meta key it also writes Celery's result entry (head .. result .. tail) and
-- publishes it, as Celery's Redis backend does. With kombu's unacked keys it also settles
-- the message (what kombu's ack would do next). Chained events (the result's route) are
-- pushed to their queues only with the result that stands: stored once, sent once.
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
local nnext = tonumber(ARGV[10])
if nnext > 0 then
  local wake_limit = tonumber(ARGV[12])
  for n = 1, nnext do
    local queue, bell = KEYS[8 + 2 * n], KEYS[9 + 2 * n]
    redis.call('ZADD', KEYS[3], ARGV[11], ARGV[11 + 2 * n])
    redis.call('LPUSH', queue, ARGV[12 + 2 * n])
    redis.call('SADD', KEYS[9], queue)
    redis.call('LPUSH', bell, 1)
    redis.call('LTRIM', bell, 0, wake_limit - 1)
  end
end
if KEYS[4] ~= '' then
  local i = 13 + 2 * nnext
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
