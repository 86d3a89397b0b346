-- An unacked record kombu cannot read (the fetch recorded an item that looked like a JSON
-- object but is not JSON: '[' .. item .. ',"",' .. queue .. ']'): put the raw item back on
-- its queue, where the next worker dead-letters it, and drop the record.
-- KEYS: unacked, unacked_index.  ARGV: tag.  Returns 1 when an item went back.
local record = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if not record then return 0 end
local cut = string.find(record, ',"",%"[^"]*%"%]$')
if not cut then return 0 end
local queue = string.sub(record, cut + 5, -3)
redis.call('RPUSH', queue, string.sub(record, 2, cut - 1))
return 1
