-- Delayed events: add fully built queue items to the scheduler's set, each due at a time.
-- KEYS: scheduled (sorted set: member -> due time), items (hash: member -> entry JSON).
-- ARGV: n, member1, due1, entry1, ..., membern, duen, entryn.
-- An entry is {"q": queue, "m": queue item, "i": event id}. Returns n.
local n = tonumber(ARGV[1])
for i = 0, n - 1 do
  local member, due, entry = ARGV[2 + 3 * i], ARGV[3 + 3 * i], ARGV[4 + 3 * i]
  redis.call('HSET', KEYS[2], member, entry)
  redis.call('ZADD', KEYS[1], due, member)
end
return n
