-- An event (or a fan-out's continuation) starts: one round trip, atomic.
-- KEYS: done, claim, deliveries, cancel.  ARGV: run_id, claim_ttl, deliveries_ttl.
-- Returns {1, result} when the event already finished (a redelivery or a duplicate),
-- {3, ''} when it was cancelled, {0, n} when this run holds the claim and may go ahead
-- (n = how many runs of this task id have started this step), {2, 0} when another run
-- holds the claim (a lease its holder renews while it runs; a dead holder's lease expires).
local done = redis.call('GET', KEYS[1])
if done then return {1, done} end
if redis.call('EXISTS', KEYS[4]) == 1 then return {3, ''} end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'EX', ARGV[2]) then return {2, 0} end
local n = redis.call('INCR', KEYS[3])
if n == 1 then redis.call('EXPIRE', KEYS[3], ARGV[3]) end
return {0, n}
