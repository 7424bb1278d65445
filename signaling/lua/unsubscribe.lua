-- Unsubscribe: take this instance out of the session's listeners (the
-- session hash's field ls; see subscribe.lua).
-- Returns 1 when it was among them, else 0.
local sess_key = KEYS[1] -- the session hash
local instance = ARGV[1]

local ls = redis.call('HGET', sess_key, 'ls')
if not ls then return 0 end
local kept, found = {}, false
for inst in string.gmatch(ls, '[^,]+') do
  if inst == instance then found = true else kept[#kept + 1] = inst end
end
if not found then return 0 end
if #kept == 0 then
  redis.call('HDEL', sess_key, 'ls')
else
  redis.call('HSET', sess_key, 'ls', table.concat(kept, ','))
end
return 1
