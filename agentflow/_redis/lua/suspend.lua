-- An event suspends (its agent returned WaitFor): store what resumes it and free its run,
-- in one step. KEYS: done, claim, inflight, wait record, scheduled, scheduled items,
--   meta (Celery's result key, or ''), unacked, unacked_index (kombu's, or ''), cancel.
-- ARGV: event_id, run_id, token, signal, queue, event JSON, context JSON, waits, agent,
--   record_ttl (0: none), due ('' without a timeout), timeout member, timeout entry,
--   meta value (status WAITING), meta_ttl, delivery_tag.
-- Returns {0} when suspended, {1, result} when the event had already finished (a
-- redelivery: its result stands), {2} when it was cancelled (nothing is stored).
local function release()
  if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
end
local done = redis.call('GET', KEYS[1])
if done then
  release()
  return {1, done}
end
redis.call('ZREM', KEYS[3], ARGV[1])
if redis.call('EXISTS', KEYS[10]) == 1 then
  release()
  return {2}
end
local function settle()
  if KEYS[8] ~= '' then
    redis.call('HDEL', KEYS[8], ARGV[16])
    redis.call('ZREM', KEYS[9], ARGV[16])
  end
end
if redis.call('HGET', KEYS[4], 'waits') == ARGV[8] then
  -- A redelivered run of a step that has suspended already: that wait stands (a signal
  -- may have resumed it meanwhile), this run only lets its message go.
  settle()
  release()
  return {0}
end
redis.call('DEL', KEYS[4])
redis.call('HSET', KEYS[4], 'status', 'waiting', 'token', ARGV[3], 'signal', ARGV[4],
  'queue', ARGV[5], 'event', ARGV[6], 'context', ARGV[7], 'waits', ARGV[8], 'agent', ARGV[9])
if tonumber(ARGV[10]) > 0 then redis.call('EXPIRE', KEYS[4], ARGV[10]) end
if ARGV[11] ~= '' then
  redis.call('HSET', KEYS[6], ARGV[12], ARGV[13])
  redis.call('ZADD', KEYS[5], ARGV[11], ARGV[12])
end
if KEYS[7] ~= '' then redis.call('SET', KEYS[7], ARGV[14], 'EX', ARGV[15]) end
settle()
release()
return {0}
