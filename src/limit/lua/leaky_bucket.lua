-- Leaky bucket as a queue (GCRA's virtual scheduling): the key holds the
-- departure time of the next client; one that would wait more than
-- `burst` departures is refused. Grants `n` consecutive departures, the
-- first `first_delay_us` from now, then one per interval.
local interval = window / limit
local most = burst * interval
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local n = math.floor((now + most - tat) / interval) + 1
if n > want then n = want end
if n < 0 then n = 0 end
local first = tat - now
if n > 0 then
  tat = tat + n * interval
  redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
end
local retry = 0
if n < want then
  retry = math.max(0, math.ceil(tat - most - now))
end
return {n, retry, window, math.ceil(first)}
