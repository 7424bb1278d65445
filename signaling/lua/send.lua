-- Send: PUBLISH an ephemeral message (stored nowhere) if the session exists.
-- Returns 0 when the session does not exist, else 1.
local sess_key = KEYS[1] -- the session hash
local channel  = ARGV[1] -- the session's pub/sub channel
local message  = ARGV[2] -- 'e' .. the encoded publication

if redis.call('EXISTS', sess_key) == 0 then return 0 end
redis.call('PUBLISH', channel, message)
return 1
