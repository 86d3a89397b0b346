-- Take up to `max` messages from the queues and record each as unacked, in one step.
--
-- A worker killed at any instant loses nothing: an item leaves its queue only inside this
-- script, which also writes kombu's unacked record for it (hash entry + index score), so it
-- is either still queued or recorded, and kombu's restore sweep brings recorded items back
-- after the visibility timeout. Each item gets a delivery tag of its own here (a counter:
-- no JSON is parsed, which cost Redis 20 us a message); the worker checks the item, and
-- dead-letters what is not a message. An item that is not even a JSON object is kept raw in
-- the malformed hash instead, so that its record never breaks kombu's restore.
--
-- When it takes fewer than `max`, every queue is empty now: it clears their doorbells
-- (`<wake prefix><queue>`, rung by producers), so the worker's next wait blocks until a
-- producer pushes again instead of waking for messages already taken.
--
-- KEYS: unacked, unacked_index, malformed, malformed_index, malformed_seq
-- ARGV: sep, wake prefix, nsteps, step..., nqueues, (queue, record)..., now, max
--   Queue keys are kombu's: the queue's name for priority step 0, else name .. sep .. step;
--   they are read step by step, queue by queue. record is 1, or 0 for a no_ack consumer.
-- Returns a flat list: drained (1 when the queues are empty now, else 0), then kind, queue
-- index, tag, item, ...  kind 1: a message (recorded unless its consumer takes no acks),
-- 2: a malformed item (recorded in the malformed hash).
local sep = ARGV[1]
local wake = ARGV[2]
local nsteps = tonumber(ARGV[3])
local nqueues = tonumber(ARGV[4 + nsteps])
local base = 4 + nsteps
local now = ARGV[base + 2 * nqueues + 1]
local remaining = tonumber(ARGV[base + 2 * nqueues + 2])
local out = {0}
for s = 1, nsteps do
  local step = ARGV[3 + s]
  for q = 1, nqueues do
    if remaining <= 0 then return out end
    local queue = ARGV[base + 2 * q - 1]
    local record = ARGV[base + 2 * q] == '1'
    local key = queue
    if step ~= '0' then key = queue .. sep .. step end
    local items = redis.call('RPOP', key, remaining)
    if items then
      for _, item in ipairs(items) do
        remaining = remaining - 1
        local n = redis.call('INCR', KEYS[5])
        local tag
        if string.byte(item, 1) == 123 and string.byte(item, -1) == 125 then  -- {...}
          tag = 'f.' .. n
          if record then
            redis.call('HSET', KEYS[1], tag, '[' .. item .. ',"",' .. cjson.encode(queue) .. ']')
            redis.call('ZADD', KEYS[2], now, tag)
          end
          out[#out + 1] = 1
        else
          tag = 'malformed.' .. n
          redis.call('HSET', KEYS[3], tag, item, tag .. ':queue', queue)
          redis.call('ZADD', KEYS[4], now, tag)
          out[#out + 1] = 2
        end
        out[#out + 1] = q
        out[#out + 1] = tag
        out[#out + 1] = item
      end
    end
  end
end
out[1] = 1
local bells = {}
for q = 1, nqueues do bells[q] = wake .. ARGV[base + 2 * q - 1] end
redis.call('DEL', unpack(bells))
return out
