-- Put before each algorithm's script (`store.rs`): its arguments and the
-- server's clock.
-- KEYS[1]: the source. ARGV: limit, window_us, burst, want, lease_us (how
-- long the shard may take to use what is granted).
-- Each script returns {granted, retry_after_us, valid_us, first_delay_us}.
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local burst, want = tonumber(ARGV[3]), tonumber(ARGV[4])
local lease = tonumber(ARGV[5])
-- Writes after TIME need effects replication before Redis 5 (the default
-- since; the call is a no-op there).
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
