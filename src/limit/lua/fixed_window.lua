-- Fixed window: a counter per source and window (windows numbered from
-- the server's clock). Granted units are valid until the window ends.
-- KEYS[1]: the source. ARGV: limit, window_us, burst (unused), want.
-- Returns {granted, retry_after_us, valid_us, first_delay_us}.
local limit, window, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
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
