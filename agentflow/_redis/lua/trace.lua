-- Store one run's trace steps (a JSON array) on its event's list, and name the event in its
-- session's list (its first run only); both expire after the trace TTL.
-- KEYS: the event's trace list, the session's list (or "").
-- ARGV: steps (JSON array), ttl, event id.
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
if KEYS[2] ~= '' then
  redis.call('RPUSH', KEYS[2], ARGV[3])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
return 1
