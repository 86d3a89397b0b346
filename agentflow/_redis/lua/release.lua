-- A run gives up its claim (only its own: a claim another run took over stays), and, when it
-- failed, its place among the events in flight.
-- KEYS: claim, inflight.  ARGV: event_id, run_id, "1" to leave the events in flight too.
if redis.call('GET', KEYS[1]) == ARGV[2] then redis.call('DEL', KEYS[1]) end
if ARGV[3] == '1' then redis.call('ZREM', KEYS[2], ARGV[1]) end
return 1
