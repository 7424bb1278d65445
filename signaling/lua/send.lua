-- Send: PUBLISH an ephemeral message (stored nowhere) if the session exists,
-- to every instance listening to the session but the sender's own (which
-- delivers it itself).
-- Returns 0 when the session does not exist, else 1.
local sess_key  = KEYS[1] -- the session hash (its ls field: the listeners, see subscribe.lua)
local channel   = ARGV[1] -- the session's channel prefix; + instance = its channel
local message   = ARGV[2] -- 'e' .. the encoded publication
local origin    = ARGV[3] -- the sending instance

local s = redis.call('HMGET', sess_key, 'exp', 'ls')
if not s[1] then return 0 end
if s[2] then
  for inst in string.gmatch(s[2], '[^,]+') do
    if inst ~= origin then redis.call('PUBLISH', channel .. inst, message) end
  end
end
return 1
