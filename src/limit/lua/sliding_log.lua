-- Sliding log: a sorted set of the times of the admitted arrivals (each
-- member unique, from a sequence), at most `limit` in any window. A unit
-- is logged at the end of its lease, the latest it can be used, and counts
-- from the moment it is granted: never too little.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now - window))
local count = redis.call('ZCARD', KEYS[1])
local n = math.max(0, math.min(want, limit - count))
local ttl = math.ceil((window + lease) / 1000) + 1000
if n > 0 then
  local seq = redis.call('INCRBY', KEYS[1] .. ':seq', n)
  for i = 0, n - 1 do
    redis.call('ZADD', KEYS[1], string.format('%.0f', now + lease), seq - i)
  end
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[1] .. ':seq', ttl)
end
local retry = 0
if n < want then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if oldest[2] then retry = math.max(0, math.ceil(tonumber(oldest[2]) + window - now)) end
end
return {n, retry, lease, 0}
