-- Token bucket as GCRA: the key holds the theoretical arrival time (TAT,
-- microseconds on the server's clock) of the next token.
local interval = window / limit
local tau = burst * interval
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local n = math.floor((now + tau - tat) / interval)
if n > want then n = want end
if n < 0 then n = 0 end
if n > 0 then
  tat = tat + n * interval
  redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
end
local retry = 0
if n < want then
  retry = math.max(0, math.ceil(tat - tau + interval - now))
end
return {n, retry, window, 0}
