-- A chord member's result is stored: settle its message, unless its chord has every
-- member's result but its continuation was not sent yet (then the member keeps its message
-- and joins again; see agentflow._worker.trace). One round trip for both.
-- KEYS: chord size (.s), size change (.t), joined results (.j, a sorted set), kombu's
--       unacked hash, unacked index (both "" when there is nothing to settle).
-- ARGV: delivery tag.  Returns 1 when the chord's continuation is still to be sent, else 0.
local size = redis.call('GET', KEYS[1])
if size and redis.call('ZCARD', KEYS[3]) >= tonumber(size) + tonumber(redis.call('GET', KEYS[2]) or 0) then
  return 1
end
if KEYS[4] ~= '' then
  redis.call('HDEL', KEYS[4], ARGV[1])
  redis.call('ZREM', KEYS[5], ARGV[1])
end
return 0
