-- Sliding window counter: this window's count plus the previous one's,
-- weighted by how much of it the sliding window still covers. Granted
-- units are valid until this window ends.
local w = math.floor(now / window)
local cur_key = KEYS[1] .. ':' .. string.format('%.0f', w)
local prev_key = KEYS[1] .. ':' .. string.format('%.0f', w - 1)
local cur = tonumber(redis.call('GET', cur_key)) or 0
local prev = tonumber(redis.call('GET', prev_key)) or 0
local elapsed = now - w * window
local estimate = prev * (window - elapsed) / window + cur
local n = math.max(0, math.min(want, math.floor(limit - estimate)))
if n > 0 then
  redis.call('INCRBY', cur_key, n)
  redis.call('PEXPIRE', cur_key, math.ceil(2 * window / 1000) + 1000)
end
local left = math.ceil(window - elapsed)
local retry = 0
if n < want then
  -- The previous window's weight falls by one arrival every window/prev.
  if prev > 0 then retry = math.min(left, math.ceil(window / prev)) else retry = left end
end
return {n, retry, left, 0}
