package queue

import "github.com/redis/go-redis/v9"

// Redis keys on a shard's primary. Queue keys and message ids are validated before
// they reach a script, so they never contain spaces or control characters.
const (
	// EpochKey holds the node's failover epoch (decimal). Lazarus stamps it on a new
	// primary before publishing the topology; every write script compares it with
	// the epoch the client routed with.
	EpochKey = "heartline:epoch"
	// keyReady is the ZSET of non-empty queues scored by the time (µs, server clock)
	// their next dequeue is allowed.
	keyReady = "rq:ready"
	// keyInflight is the ZSET of delivered, unacknowledged message ids scored by
	// their visibility deadline (µs).
	keyInflight = "rq:inflight"
	// keyStored counts messages stored on the shard (waiting or in flight).
	keyStored = "rq:n"
	// keyProbe is written by the readiness check.
	keyProbe = "rq:probe"
	// Per-queue and per-message key prefixes (used inside the scripts):
	//   rq:q:<queue>  LIST of message ids, head = next to deliver; deleted when empty
	//   rq:r:<queue>  STRING next allowed dequeue (µs), expires after that time + 1 s
	//   rq:m:<id>     HASH q (queue), b (body), iv (interval µs), c (deliveries)
	//   rq:i:<key>    STRING idempotency key -> message id, with a TTL
	prefixQueue = "rq:q:"
	prefixMsg   = "rq:m:"
)

// epochCheck is the fence every write script starts with: KEYS[1] is EpochKey and
// ARGV[1] the routed epoch. A missing key counts as 0, so an unstamped node refuses.
const epochCheck = `
local ne = redis.call('GET', KEYS[1]) or '0'
if tonumber(ne) ~= tonumber(ARGV[1]) then
  return redis.error_reply('STALEEPOCH ' .. ne .. ' ' .. ARGV[1])
end
`

// enqueueScript: KEYS epoch, ready, stored. ARGV epoch, queue, id, body, interval µs,
// idempotency key (” for none), idempotency TTL ms.
// Returns {id, duplicate 0|1, server µs when the queue was created, else 0}.
var enqueueScript = redis.NewScript(epochCheck + `
local q, id = ARGV[2], ARGV[3]
if ARGV[6] ~= '' then
  local ik = 'rq:i:' .. ARGV[6]
  local prev = redis.call('GET', ik)
  if prev then return {prev, 1, 0} end
  redis.call('SET', ik, id, 'PX', ARGV[7])
end
local mk = 'rq:m:' .. id
if redis.call('EXISTS', mk) == 1 then return {id, 1, 0} end
redis.call('HSET', mk, 'q', q, 'b', ARGV[4], 'iv', ARGV[5], 'c', 0)
redis.call('INCR', KEYS[3])
if redis.call('RPUSH', 'rq:q:' .. q, id) == 1 then
  -- a new (or refilled) queue: ready at its saved next allowed time, or now
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local nxt = tonumber(redis.call('GET', 'rq:r:' .. q) or '0')
  if nxt < now then nxt = now end
  redis.call('ZADD', KEYS[2], nxt, q)
  return {id, 0, now}
end
return {id, 0, 0}
`)

// dequeueScript: KEYS epoch, ready, inflight. ARGV epoch, visibility µs, reap limit.
// First it moves up to <reap limit> expired in-flight messages back to the head of
// their queues (latest deadline first, so that they keep their order). Then it pops
// the head of the queue with the lowest allowed time if that time has come, marks it
// in flight and moves the queue's allowed time on by the message's interval.
// Returns {id, server µs, queue, body, deliveries, interval µs} or, when nothing is
// allowed now, {”, server µs, next allowed µs | -1, next deadline µs | -1,
// ready queues, in flight}.
var dequeueScript = redis.NewScript(epochCheck + `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local exp = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
for i = #exp, 1, -1 do
  local id = exp[i]
  redis.call('ZREM', KEYS[3], id)
  local q = redis.call('HGET', 'rq:m:' .. id, 'q')
  if q then
    redis.call('LPUSH', 'rq:q:' .. q, id)
    if not redis.call('ZSCORE', KEYS[2], q) then
      local nxt = tonumber(redis.call('GET', 'rq:r:' .. q) or '0')
      if nxt < now then nxt = now end
      redis.call('ZADD', KEYS[2], nxt, q)
    end
  end
end
for attempt = 1, 10 do
  local r = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1)
  if #r == 0 then break end
  local q = r[1]
  local qk = 'rq:q:' .. q
  local id = redis.call('LPOP', qk)
  if not id then
    redis.call('ZREM', KEYS[2], q)
  else
    local mk = 'rq:m:' .. id
    local f = redis.call('HMGET', mk, 'b', 'iv')
    if f[1] then
      local c = redis.call('HINCRBY', mk, 'c', 1)
      local iv = tonumber(f[2]) or 0
      local nxt = now + iv
      if iv > 0 then
        redis.call('SET', 'rq:r:' .. q, string.format('%d', nxt), 'PX', math.floor(iv / 1000) + 1000)
      end
      if redis.call('LLEN', qk) > 0 then
        redis.call('ZADD', KEYS[2], nxt, q)
      else
        redis.call('ZREM', KEYS[2], q)
      end
      redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), id)
      return {id, now, q, f[1], c, iv}
    end
    if redis.call('LLEN', qk) == 0 then redis.call('ZREM', KEYS[2], q) end
  end
end
local nr = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local ni = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
return {'', now, nr[2] or '-1', ni[2] or '-1', redis.call('ZCARD', KEYS[2]), redis.call('ZCARD', KEYS[3])}
`)

// ackScript: KEYS epoch, inflight, stored. ARGV epoch, id.
// Returns 1 (acked now), 0 (no such message: acked before, or never stored) or
// 2 (stored but not in flight: it went back to its queue).
var ackScript = redis.NewScript(epochCheck + `
if redis.call('ZREM', KEYS[2], ARGV[2]) == 1 then
  redis.call('DEL', 'rq:m:' .. ARGV[2])
  redis.call('DECR', KEYS[3])
  return 1
end
if redis.call('EXISTS', 'rq:m:' .. ARGV[2]) == 1 then return 2 end
return 0
`)

// probeScript: KEYS epoch, probe. ARGV epoch. A write that proves the node is the
// fenced, writable primary of the routed epoch.
var probeScript = redis.NewScript(epochCheck + `
redis.call('SET', KEYS[2], ARGV[1], 'PX', 60000)
return 1
`)
