-- CreateSession: register a session until exp_ms. Re-creating an id resets
-- its state, sequence numbers, history and presence but keeps its offset
-- counter, so the offsets of an id never go backwards, and its listeners
-- (the instances listening still do).
-- Returns 1.
local sess_key    = KEYS[1] -- the session hash: id, uid, created, exp, off, ls, and publish.lua's fields
local seqs_key    = KEYS[2] -- the earlier layout's seqs (see publish.lua)
local stream_key  = KEYS[3] -- the history
local members_key = KEYS[4] -- presence
local id          = ARGV[1]
local uid         = ARGV[2]
local created_ms  = ARGV[3]
local exp_ms      = ARGV[4]

local s = redis.call('HMGET', sess_key, 'off', 'ls')
redis.call('DEL', sess_key, seqs_key, stream_key, members_key)
redis.call('HSET', sess_key, 'id', id, 'uid', uid, 'created', created_ms, 'exp', exp_ms, 'off', s[1] or 0)
if s[2] then redis.call('HSET', sess_key, 'ls', s[2]) end
redis.call('PEXPIREAT', sess_key, exp_ms)
return 1
