-- Running events keep their claims: each claim still held by the given run gets its lease
-- renewed (a claim the run gave up, or another run took, is left alone).
-- KEYS: claim keys.  ARGV: ttl, run id of each key in order.
local n = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i + 1] then
    redis.call('EXPIRE', KEYS[i], ARGV[1])
    n = n + 1
  end
end
return n
