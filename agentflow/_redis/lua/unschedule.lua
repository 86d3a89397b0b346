-- Cancel a delayed event: make its entry due at once (score 0), so the scheduler moves it
-- now and the worker that takes it finds it cancelled (no run; its result says REVOKED,
-- written where every result is). The cancel marker is set before this runs.
-- KEYS: scheduled, items.  ARGV: event id.
-- Returns 1 when the event was scheduled, else 0.
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[1], 0, ARGV[1])
return 1
