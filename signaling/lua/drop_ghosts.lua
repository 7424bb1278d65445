-- Members: drop the presence of members whose instance stopped
-- heartbeating, each only if it is still exactly the one found.
-- ARGV holds pairs: client id, member JSON. Returns 1.
local members_key = KEYS[1] -- presence: client id -> member JSON

for i = 1, #ARGV, 2 do
  local client_id, member = ARGV[i], ARGV[i + 1]
  if redis.call('HGET', members_key, client_id) == member then redis.call('HDEL', members_key, client_id) end
end
return 1
