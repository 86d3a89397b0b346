-- Running events keep their claims: each claim whose holder is still the given task id gets
-- its lease renewed. KEYS: claim keys.  ARGV: ttl, task id of each key in order.
local n = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i + 1] then
    redis.call('EXPIRE', KEYS[i], ARGV[1])
    n = n + 1
  end
end
return n
