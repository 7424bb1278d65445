-- Subscribe: record that this instance listens to the session (its channel
-- is <channel prefix><instance>, subscribed before this script runs) and
-- read the session's offset, atomically: every publication after the offset
-- returned is published to this instance's channel, and none before it is
-- missed (the caller reads those from the stream).
-- Returns {0} when the session does not exist, else {1, off}.
local sess_key  = KEYS[1] -- the session hash
local insts_key = KEYS[2] -- the instances listening to the session (a set)
local instance  = ARGV[1]

local s = redis.call('HMGET', sess_key, 'exp', 'off')
if not s[1] then return {0} end
redis.call('SADD', insts_key, instance)
redis.call('PEXPIREAT', insts_key, s[1]) -- expires with the session
return {1, tonumber(s[2]) or 0}
