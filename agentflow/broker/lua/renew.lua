-- Running events keep their claims: each claim still held by the given run gets its lease
-- renewed, and a claim that vanished (Redis came back empty) is taken again for that run.
-- KEYS: claim keys.  ARGV: ttl, run id of each key in order.
local n = 0
for i = 1, #KEYS do
  local holder = redis.call('GET', KEYS[i])
  if holder == ARGV[i + 1] then
    redis.call('EXPIRE', KEYS[i], ARGV[1])
    n = n + 1
  elseif not holder then
    redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', ARGV[1])
    n = n + 1
  end
end
return n
