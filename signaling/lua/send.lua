-- Send: PUBLISH an ephemeral message (stored nowhere) if the session exists,
-- to every instance listening to the session but the sender's own (which
-- delivers it itself).
-- Returns 0 when the session does not exist, else 1.
local sess_key  = KEYS[1] -- the session hash
local insts_key = KEYS[2] -- the instances listening to the session (a set)
local channel   = ARGV[1] -- the session's channel prefix; + instance = its channel
local message   = ARGV[2] -- 'e' .. the encoded publication
local origin    = ARGV[3] -- the sending instance

if redis.call('EXISTS', sess_key) == 0 then return 0 end
for _, inst in ipairs(redis.call('SMEMBERS', insts_key)) do
  if inst ~= origin then redis.call('PUBLISH', channel .. inst, message) end
end
return 1
