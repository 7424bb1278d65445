-- Publish: check the sender's seq, take the session's next offset, apply the
-- state change, append to the history stream and PUBLISH to every instance
-- listening to the session but the publisher's own (it delivers the
-- publication itself, from this script's reply), atomically.
-- Returns {0, off, seq} published; {1} no such session; {2, seq} a duplicate
-- (seq at or below the sender's last); {3, seq} seq skips ahead (beyond
-- its gap: the sender gave up the gap seqs before it); {4, seq} a
-- new sender and no room for its count (see ErrTooManySenders).
--
-- A sender's entry is "seq:ms", its last seq and when it last sent. The hash
-- holds at most max_seq senders: a new one makes room by forgetting, oldest
-- first, only a sender that is not present and sent nothing for retention
-- ms (a member long gone); the memory broker has the same rule.
--
-- Every redis.call costs a script about as much as the command itself again
-- (arguments and reply are converted between Lua and Redis), so the script
-- makes as few as it can: one HMGET, one HSET of all the session's fields,
-- and PEXPIREAT only on a key it has just created. Keys already there keep
-- the expiry that CreateSession and ExtendSession gave them (HSET and XADD
-- keep a key's expiry), and all of a session's keys expire at the same
-- millisecond, so while the session hash exists, so do the others.
local sess_key   = KEYS[1] -- the session hash: exp, off, chord, chord_from, practice
local seqs_key   = KEYS[2] -- last accepted seq per sender
local stream_key = KEYS[3] -- the history, entry id = offset
local members_key = KEYS[4] -- presence: client id -> member JSON
local insts_key  = KEYS[5] -- the instances listening to the session (a set)
local seq_from   = ARGV[1] -- the sender whose seq is checked; '' = not sequenced
local seq_arg    = ARGV[2] -- the sender's seq; 0 = assign the next one
local from       = ARGV[3] -- the sender (becomes chord_from)
local chord      = ARGV[4] -- '' = no chord change
local practice   = ARGV[5] -- practice JSON; '' = no practice change
local payload    = ARGV[6] -- the encoded publication
local max_len    = ARGV[7] -- the history's approximate length bound
local now_ms     = ARGV[8] -- the entry's time, for the history's age bound
local channel    = ARGV[9] -- the session's channel prefix; + instance = its channel
local max_seq    = tonumber(ARGV[10]) -- senders remembered at most
local retention  = tonumber(ARGV[11]) -- ms after which an absent sender may be forgotten
local gap        = tonumber(ARGV[12] or '0') -- seqs the sender gave up right before seq
local origin     = ARGV[13] -- the publishing instance

local s = redis.call('HMGET', sess_key, 'exp', 'off')
local exp, last_off = s[1], s[2]
-- Expired at exp_ms, as Session says: Redis keeps the key through that
-- millisecond (it expires a key only once the time is past its PEXPIREAT).
if not exp or tonumber(exp) <= tonumber(now_ms) then return {1} end
local seq = tonumber(seq_arg)
if seq_from ~= '' then
  local entry = redis.call('HGET', seqs_key, seq_from)
  local last = 0
  if entry then
    last = tonumber(string.match(entry, '^%d+')) or 0
  end
  if seq == 0 then
    seq = last + 1
  elseif seq <= last then
    return {2, seq}
  elseif seq - 1 - math.min(gap, seq - 1) > last then
    return {3, seq}
  end
  if not entry and redis.call('HLEN', seqs_key) >= max_seq then
    local all = redis.call('HGETALL', seqs_key)
    local victim, victim_t = nil, nil
    local horizon = tonumber(now_ms) - retention
    for i = 1, #all, 2 do
      local t = tonumber(string.match(all[i + 1], ':(%d+)$') or '0')
      if t < horizon and (not victim_t or t < victim_t) and redis.call('HEXISTS', members_key, all[i]) == 0 then
        victim, victim_t = all[i], t
      end
    end
    if not victim then return {4, seq} end
    redis.call('HDEL', seqs_key, victim)
  end
  if redis.call('HSET', seqs_key, seq_from, seq .. ':' .. now_ms) == 1 then
    redis.call('PEXPIREAT', seqs_key, exp) -- a new field, perhaps a new key
  end
end
local off = (tonumber(last_off) or 0) + 1
if chord ~= '' and practice ~= '' then
  redis.call('HSET', sess_key, 'off', off, 'chord', chord, 'chord_from', from, 'practice', practice)
elseif chord ~= '' then
  redis.call('HSET', sess_key, 'off', off, 'chord', chord, 'chord_from', from)
elseif practice ~= '' then
  redis.call('HSET', sess_key, 'off', off, 'practice', practice)
else
  redis.call('HSET', sess_key, 'off', off)
end
local id = off .. '-0'
if not redis.call('XADD', stream_key, 'NOMKSTREAM', 'MAXLEN', '~', max_len, id, 'q', seq, 't', now_ms, 'd', payload) then
  redis.call('XADD', stream_key, 'MAXLEN', '~', max_len, id, 'q', seq, 't', now_ms, 'd', payload)
  redis.call('PEXPIREAT', stream_key, exp)
end
local message
for _, inst in ipairs(redis.call('SMEMBERS', insts_key)) do
  if inst ~= origin then
    message = message or ('p' .. off .. ':' .. seq .. ':' .. payload)
    redis.call('PUBLISH', channel .. inst, message)
  end
end
return {0, off, seq}
