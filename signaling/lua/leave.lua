-- Leave: remove a member's presence only if it is still exactly this
-- member's (a newer connection of the same client id stays).
-- Returns 1 when it removed it, else 0.
local members_key = KEYS[1] -- presence: client id -> member JSON
local client_id   = ARGV[1]
local member      = ARGV[2]

if redis.call('HGET', members_key, client_id) == member then
  redis.call('HDEL', members_key, client_id)
  return 1
end
return 0
