-- CreateSession: register a session until exp_ms. Re-creating an id resets
-- its state, sequence numbers, history and presence but keeps its offset
-- counter, so the offsets of an id never go backwards.
-- Returns 1.
local sess_key    = KEYS[1] -- the session hash: id, uid, created, exp, off, chord, chord_from, practice
local seqs_key    = KEYS[2] -- last accepted seq per sender
local stream_key  = KEYS[3] -- the history
local members_key = KEYS[4] -- presence
local insts_key   = KEYS[5] -- the instances listening (kept: they still do)
local id          = ARGV[1]
local uid         = ARGV[2]
local created_ms  = ARGV[3]
local exp_ms      = ARGV[4]

redis.call('DEL', seqs_key, stream_key, members_key)
redis.call('HDEL', sess_key, 'chord', 'chord_from', 'practice')
redis.call('HSET', sess_key, 'id', id, 'uid', uid, 'created', created_ms, 'exp', exp_ms)
redis.call('HSETNX', sess_key, 'off', 0)
redis.call('PEXPIREAT', sess_key, exp_ms)
redis.call('PEXPIREAT', insts_key, exp_ms) -- (nothing when nobody listens yet)
return 1
