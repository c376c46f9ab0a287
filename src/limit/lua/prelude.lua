-- Put before each algorithm's script (`store.rs`): its arguments and the
-- server's clock.
-- KEYS[1]: the source. ARGV: limit, window_us, burst, want.
-- Each script returns {granted, retry_after_us, valid_us, first_delay_us}.
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local burst, want = tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
