-- Put malformed items back on their queues: those taken before ARGV[2] (their worker died),
-- or, with ARGV[1] == 'tag', the one item tagged ARGV[2]. The worker that takes them next
-- dead-letters them. KEYS: malformed, malformed_index. ARGV: mode, ceil or tag, limit.
-- Returns how many were put back.
local tags
if ARGV[1] == 'tag' then
  tags = {ARGV[2]}
else
  tags = redis.call('ZRANGE', KEYS[2], '-inf', ARGV[2], 'BYSCORE', 'LIMIT', 0, ARGV[3])
end
local n = 0
for _, tag in ipairs(tags) do
  local item = redis.call('HGET', KEYS[1], tag)
  local queue = redis.call('HGET', KEYS[1], tag .. ':queue')
  if item and queue then
    redis.call('RPUSH', queue, item)
    n = n + 1
  end
  redis.call('HDEL', KEYS[1], tag, tag .. ':queue')
  redis.call('ZREM', KEYS[2], tag)
end
return n
