-- Admit: store a newcomer's presence unless its role has no free slot, in
-- one atomic step (the cap holds across instances). A client id already
-- present (its own earlier connection) is always let in.
-- Returns 0 when the session does not exist, 2 when the role is full, else 1.
local sess_key    = KEYS[1] -- the session hash (its 'exp' field)
local members_key = KEYS[2] -- presence: client id -> member JSON
local client_id   = ARGV[1]
local member      = ARGV[2]
local role        = ARGV[3]
local limit       = tonumber(ARGV[4])

local exp = redis.call('HGET', sess_key, 'exp')
if not exp then return 0 end
if redis.call('HEXISTS', members_key, client_id) == 0 then
  local all = redis.call('HVALS', members_key)
  local n = 0
  for i = 1, #all do
    local ok, m = pcall(cjson.decode, all[i])
    if ok and type(m) == 'table' and m['role'] == role then n = n + 1 end
  end
  if n >= limit then return 2 end
end
redis.call('HSET', members_key, client_id, member)
redis.call('PEXPIREAT', members_key, exp)
return 1
