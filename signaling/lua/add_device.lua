-- AddDevice: record a paired device (replacing the one of the same client
-- id) unless the session has max others. Returns 0 without a session, 1
-- done, 2 too many.
local sess_key    = KEYS[1] -- the session hash
local devices_key = KEYS[2] -- hash client id -> device JSON
local client_id   = ARGV[1]
local device_json = ARGV[2]
local max         = ARGV[3]

local exp = redis.call('HGET', sess_key, 'exp')
if not exp then return 0 end
if redis.call('HEXISTS', devices_key, client_id) == 0 and redis.call('HLEN', devices_key) >= tonumber(max) then return 2 end
redis.call('HSET', devices_key, client_id, device_json)
redis.call('PEXPIREAT', devices_key, exp)
return 1
