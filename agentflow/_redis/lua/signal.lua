-- Resume a suspended event (Client.signal, or Client.cancel of a waiting event): exactly
-- once, whatever races it (another signal, the wait's timeout in move_due.lua): the wait
-- ends and the resume message is pushed in one step, only while it still waits.
-- KEYS: wait record, scheduled, scheduled items, queue, doorbell, the set of queues.
-- ARGV: signal name ('' : any, for a cancel), token, queue item, ring_limit, timeout member.
-- Returns 1 when this call resumed it, else 0.
if redis.call('HGET', KEYS[1], 'status') ~= 'waiting' then return 0 end
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[2] then return 0 end
if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], 'signal') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', 'resumed')
redis.call('ZREM', KEYS[2], ARGV[5])
redis.call('HDEL', KEYS[3], ARGV[5])
redis.call('LPUSH', KEYS[4], ARGV[3])
redis.call('LPUSH', KEYS[5], 1)
redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[4]) - 1)
redis.call('SADD', KEYS[6], KEYS[4])
return 1
