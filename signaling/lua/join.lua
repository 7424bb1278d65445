-- Join: store a member's presence (its JSON under its client id), expiring
-- with the session; an empty member removes the client id instead.
-- Returns 0 when the session does not exist, else 1.
local sess_key    = KEYS[1] -- the session hash (its 'exp' field)
local members_key = KEYS[2] -- presence: client id -> member JSON
local client_id   = ARGV[1]
local member      = ARGV[2]

local exp = redis.call('HGET', sess_key, 'exp')
if not exp then return 0 end
if member == '' then
  redis.call('HDEL', members_key, client_id)
else
  redis.call('HSET', members_key, client_id, member)
  redis.call('PEXPIREAT', members_key, exp)
end
return 1
