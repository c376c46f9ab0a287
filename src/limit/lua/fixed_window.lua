-- Fixed window: a counter per source and window (windows numbered from
-- the server's clock). Granted units are valid until the window ends.
local w = math.floor(now / window)
local key = KEYS[1] .. ':' .. string.format('%.0f', w)
local count = tonumber(redis.call('GET', key)) or 0
local n = math.max(0, math.min(want, limit - count))
if n > 0 then
  redis.call('INCRBY', key, n)
  redis.call('PEXPIRE', key, math.ceil(window / 1000) + 1000)
end
local left = math.ceil((w + 1) * window - now)
local retry = 0
if n < want then retry = left end
return {n, retry, left, 0}
