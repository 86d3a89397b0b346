-- Take up to ARGV[2] messages from the queues and record each as unacked, in one step.
--
-- A worker killed at any instant loses nothing: an item leaves its queue only inside this
-- script, which also writes kombu's unacked record for it (hash entry + index score), so it
-- is either still queued or recorded, and kombu's restore sweep brings recorded items back
-- after the visibility timeout. An item that is not a kombu envelope (hand-pushed JSON, not
-- JSON at all, too deeply nested) is kept raw in the malformed hash instead, under a tag of
-- its own, so the worker can dead-letter it with its reason.
--
-- KEYS: unacked, unacked_index, malformed, malformed_index, malformed_seq, queue keys...
-- ARGV: now, max, then per queue key: queue name, record (1) or not (0, a no_ack consumer)
-- Returns a flat list: kind, key index, tag, item, ...  kind 1: a message (recorded unless
-- its consumer takes no acks), 2: a malformed item (recorded in the malformed hash).
local now = ARGV[1]
local remaining = tonumber(ARGV[2])
local out = {}
for i = 6, #KEYS do
  if remaining <= 0 then break end
  local queue = ARGV[2 * (i - 5) + 1]
  local record = ARGV[2 * (i - 5) + 2] == '1'
  local items = redis.call('RPOP', KEYS[i], remaining)
  if items then
    for _, item in ipairs(items) do
      remaining = remaining - 1
      local tag = nil
      local ok, msg = pcall(cjson.decode, item)
      if ok and type(msg) == 'table' and msg.body ~= nil and type(msg.properties) == 'table'
          and (msg.headers == nil or msg.headers == cjson.null or type(msg.headers) == 'table')
          and type(msg.properties.delivery_info) == 'table' then
        local t = msg.properties.delivery_tag
        if type(t) == 'string' and t ~= '' then tag = t end
      end
      if tag then
        if record then
          redis.call('HSET', KEYS[1], tag, '[' .. item .. ',"",' .. cjson.encode(queue) .. ']')
          redis.call('ZADD', KEYS[2], now, tag)
        end
        out[#out + 1] = 1
      else
        tag = 'malformed.' .. redis.call('INCR', KEYS[5])
        redis.call('HSET', KEYS[3], tag, item, tag .. ':queue', queue)
        redis.call('ZADD', KEYS[4], now, tag)
        out[#out + 1] = 2
      end
      out[#out + 1] = i - 5
      out[#out + 1] = tag
      out[#out + 1] = item
    end
  end
end
return out
