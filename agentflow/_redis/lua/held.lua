-- Count kombu's unacked records by queue, one HSCAN step at a time.
--
-- A record (written by fetch.lua, or by the heartbeat after Redis came back empty) is a JSON
-- array that ends with its queue's name: [<message>, "<exchange>", "<queue>"]. Only the
-- queue's name goes back to the caller, never the messages, so counting costs Redis a
-- bounded step and the network a few bytes per queue.
--
-- KEYS: unacked. ARGV: cursor, count.
-- Returns {next cursor, queue, n, queue, n, ...}.
local reply = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local entries = reply[2]
local counts, order = {}, {}
for i = 2, #entries, 2 do
  local v = entries[i]
  local n = #v
  if n > 3 and string.byte(v, n) == 93 and string.byte(v, n - 1) == 34 then  -- ..."]
    local j = n - 2
    while j > 0 and string.byte(v, j) ~= 34 do j = j - 1 end
    local queue = string.sub(v, j + 1, n - 2)
    if counts[queue] == nil then
      counts[queue] = 0
      order[#order + 1] = queue
    end
    counts[queue] = counts[queue] + 1
  end
end
local out = {reply[1]}
for _, queue in ipairs(order) do
  out[#out + 1] = queue
  out[#out + 1] = counts[queue]
end
return out
