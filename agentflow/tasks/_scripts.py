"""Lua scripts that make an event's start and finish single round trips, and atomic."""

from __future__ import annotations

# KEYS: done, claim, deliveries.  ARGV: task_id, claim_ttl, deliveries_ttl.
# Returns {1, result} when the event already finished, {0, n} when this run may go ahead
# (n = how many times this task id has started), {2, n} when another run holds the claim.
BEGIN = """
local done = redis.call('GET', KEYS[1])
if done then return {1, done} end
local n = redis.call('INCR', KEYS[3])
if n == 1 then redis.call('EXPIRE', KEYS[3], ARGV[3]) end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'EX', ARGV[2]) then return {0, n} end
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  return {0, n}
end
return {2, n}
"""

# KEYS: done, claim, inflight, state (or ""), meta (Celery's result key, or ""),
#       unacked, unacked_index (kombu's unacked hash and index, or "").
# ARGV: result, result_ttl, event_id, state_ttl, meta_head, meta_tail, meta_ttl,
#       delivery_tag, nset, k1, v1, ..., ndel, k..., nincr, k, n, ...
# Stores the result unless another run already did (then returns that one) and applies the
# state delta only for the run that wins, so a redelivered event never applies it twice.
# With a meta key it also writes Celery's backend entry (head .. result .. tail) and
# publishes it, as Celery's Redis backend does, for whichever result stands. With kombu's
# unacked keys it also settles the message in Redis (what kombu's ack would do next).
FINISH = """
local existing = redis.call('GET', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[3])
if KEYS[6] ~= '' then
  redis.call('HDEL', KEYS[6], ARGV[8])
  redis.call('ZREM', KEYS[7], ARGV[8])
end
local stored = existing or ARGV[1]
if KEYS[5] ~= '' then
  local meta = ARGV[5] .. stored .. ARGV[6]
  redis.call('SET', KEYS[5], meta, 'EX', ARGV[7])
  redis.call('PUBLISH', KEYS[5], meta)
end
if existing then
  redis.call('DEL', KEYS[2])
  return existing
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('DEL', KEYS[2])
if KEYS[4] ~= '' then
  local i = 9
  local nset = tonumber(ARGV[i]); i = i + 1
  for _ = 1, nset do
    redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1]); i = i + 2
  end
  local ndel = tonumber(ARGV[i]); i = i + 1
  for _ = 1, ndel do
    redis.call('HDEL', KEYS[4], ARGV[i]); i = i + 1
  end
  local nincr = tonumber(ARGV[i]); i = i + 1
  for _ = 1, nincr do
    redis.call('HINCRBY', KEYS[4], ARGV[i], ARGV[i + 1]); i = i + 2
  end
  if nset + ndel + nincr > 0 then
    redis.call('HINCRBY', KEYS[4], '__v', 1)
    redis.call('EXPIRE', KEYS[4], ARGV[4])
  end
end
return false
"""

# KEYS: claim, inflight.  ARGV: event_id.  A run that fails gives up its claim and slot.
RELEASE = """
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""
