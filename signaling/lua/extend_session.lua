-- ExtendSession: push the expiry of a session and of all its keys to exp_ms;
-- never shortens it. Every key of a session expires at the same millisecond.
-- Returns 0 when the session does not exist, else 1.
local sess_key = KEYS[1] -- the session hash; KEYS[2..] are the session's other keys
local exp_ms   = ARGV[1]

local exp = redis.call('HGET', sess_key, 'exp')
if not exp then return 0 end
if tonumber(exp_ms) > tonumber(exp) then
  redis.call('HSET', sess_key, 'exp', exp_ms)
  for i = 1, #KEYS do redis.call('PEXPIREAT', KEYS[i], exp_ms) end
end
return 1
