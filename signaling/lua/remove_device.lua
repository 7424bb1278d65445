-- RemoveDevice: forget a paired device and revoke its client id for the
-- session's lifetime. Returns -1 without a session, else 1 if the device was
-- paired and 0 if not (revoked all the same).
local sess_key    = KEYS[1] -- the session hash
local devices_key = KEYS[2] -- hash client id -> device JSON
local revoked_key = KEYS[3] -- set of revoked client ids
local client_id   = ARGV[1]

local exp = redis.call('HGET', sess_key, 'exp')
if not exp then return -1 end
local n = redis.call('HDEL', devices_key, client_id)
redis.call('SADD', revoked_key, client_id)
redis.call('PEXPIREAT', revoked_key, exp)
return n
