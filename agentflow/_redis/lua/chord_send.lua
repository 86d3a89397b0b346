-- A chord's continuation goes out once: the member that holds the chord's dispatch claim
-- pushes it (and rings its queue's doorbell) and clears the chord's keys in one step. This is
-- what Celery's Redis backend does in three (extend the claim, publish, CHORD_CLEANUP_LUA),
-- made atomic: the continuation is pushed if and only if the claim is still this member's.
-- KEYS: claim (.c), joined results (.j), size change (.t), size (.s), members seen (.d),
--       the continuation's queue, that queue's doorbell, the set of queues pushed to.
-- ARGV: claim token, seconds the 'done' marker lives, the queue item, the queue's name,
--       doorbell rings kept at most.
-- Returns 1 when it pushed the continuation, 0 when the claim is another member's or the
-- chord is gone (then that member sends it, or it was sent).
local claim = redis.call('GET', KEYS[1])
if claim ~= ARGV[1] then
  -- Celery's claim extension takes an expired claim back while the chord's size is there.
  if claim or redis.call('EXISTS', KEYS[4]) == 0 then
    return 0
  end
end
redis.call('LPUSH', KEYS[6], ARGV[3])
redis.call('SADD', KEYS[8], ARGV[4])
redis.call('LPUSH', KEYS[7], 1)
redis.call('LTRIM', KEYS[7], 0, tonumber(ARGV[5]) - 1)
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('SET', KEYS[1], 'done', 'EX', tonumber(ARGV[2]))
return 1
