-- Count: add delta to a counter; with a window, the counter ends that long
-- after its first count. Returns the new value.
local counter_key = KEYS[1]
local delta       = ARGV[1]
local window_ms   = ARGV[2] -- 0: no expiry

local n = redis.call('INCRBY', counter_key, delta)
if tonumber(window_ms) > 0 and redis.call('PTTL', counter_key) < 0 then
  redis.call('PEXPIRE', counter_key, window_ms)
end
return n
