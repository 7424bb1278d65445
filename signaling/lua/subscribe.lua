-- Subscribe: record that this instance listens to the session (its channel
-- is <channel prefix><instance>, subscribed before this script runs) and
-- read the session's offset, atomically: every publication after the offset
-- returned is published to this instance's channel, and none before it is
-- missed (the caller reads those from the stream).
-- The listeners are the session hash's field ls, instance ids separated by
-- commas (RedisConfig.Instance has none), as publish.lua reads them.
-- Returns {0} when the session does not exist, else {1, off}.
local sess_key = KEYS[1] -- the session hash
local instance = ARGV[1]

local s = redis.call('HMGET', sess_key, 'exp', 'off', 'ls')
if not s[1] then return {0} end
local ls = s[3]
if not ls or ls == '' then
  redis.call('HSET', sess_key, 'ls', instance)
elseif not string.find(',' .. ls .. ',', ',' .. instance .. ',', 1, true) then
  redis.call('HSET', sess_key, 'ls', ls .. ',' .. instance)
end
return {1, tonumber(s[2]) or 0}
