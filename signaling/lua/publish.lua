-- Publish: check the sender's seq, take the session's next offset, apply the
-- state change, append to the history stream and PUBLISH to every instance
-- listening to the session but the publisher's own (it delivers the
-- publication itself, from this script's reply), atomically.
-- Returns {0, off, seq} published; {1} no such session; {2, seq} a duplicate
-- (seq at or below the sender's last); {3, seq} seq skips ahead (beyond
-- its gap: the sender gave up the gap seqs before it); {4, seq} a
-- new sender and no room for its count (see ErrTooManySenders).
--
-- Everything the script reads and changes but the history is in the session
-- hash, so that one HMGET reads it and one HSET writes it:
--   exp, off, chord, chord_from, practice  (CreateSession, earlier publishes)
--   ls       the instances listening, comma-separated (subscribe.lua)
--   q:<id>   a sender's last accepted seq; t:<id> when it sent it (ms)
--   nq       how many senders the hash remembers
-- The hash holds at most max_seq senders: a new one makes room by
-- forgetting, oldest first, only a sender that is not present and sent
-- nothing for retention ms (a member long gone); the memory broker has the
-- same rule.
--
-- Every redis.call costs a script more than the command itself (arguments
-- and reply are converted between Lua and Redis), and so does each Lua
-- step: the common publish makes four calls (HMGET, HSET, XADD, PUBLISH).
-- A session hash that exists has the expiry CreateSession and
-- ExtendSession gave it (HSET and XADD keep a key's expiry); all of a
-- session's keys expire at the same millisecond, so the stream gets it
-- when this script creates it.
--
-- seqs_key is where releases before this layout kept the senders' seqs
-- ("seq:ms" per sender): a sender the hash does not know is looked up
-- there and moved into the hash, so that a session that lived through the
-- upgrade refuses the duplicates it did before.
local sess_key    = KEYS[1] -- the session hash (above)
local seqs_key    = KEYS[2] -- the earlier layout's seqs
local stream_key  = KEYS[3] -- the history, entry id = offset
local members_key = KEYS[4] -- presence: client id -> member JSON
local seq_from   = ARGV[1] -- the sender whose seq is checked; '' = not sequenced
local seq        = tonumber(ARGV[2]) -- the sender's seq; 0 = assign the next one
local from       = ARGV[3] -- the sender (becomes chord_from)
local chord      = ARGV[4] -- '' = no chord change
local practice   = ARGV[5] -- practice JSON; '' = no practice change
local payload    = ARGV[6] -- the encoded publication
local max_len    = ARGV[7] -- the history's approximate length bound
local now_ms     = ARGV[8] -- the entry's time, for the history's age bound
local channel    = ARGV[9] -- the session's channel prefix; + instance = its channel
-- ARGV[10] max_seq: senders remembered at most
-- ARGV[11] retention: ms after which an absent sender may be forgotten
-- ARGV[12] gap: seqs the sender gave up right before seq
local origin     = ARGV[13] -- the publishing instance

local s, qf
if seq_from ~= '' then
  qf = 'q:' .. seq_from
  s = redis.call('HMGET', sess_key, 'exp', 'off', 'ls', qf, 'nq')
else
  s = redis.call('HMGET', sess_key, 'exp', 'off', 'ls')
end
local exp = s[1]
-- Expired at exp_ms, as Session says: Redis keeps the key through that
-- millisecond (it expires a key only once the time is past its PEXPIREAT).
if not exp or tonumber(exp) <= tonumber(now_ms) then return {1} end
local off = (tonumber(s[2]) or 0) + 1
if seq_from ~= '' then
  local last = tonumber(s[4])
  local nq -- the sender count, when this sender is new to the hash
  local old -- its entry in the earlier layout's seqs, if any
  if not last then
    old = redis.call('HGET', seqs_key, seq_from)
    last = old and tonumber(string.match(old, '^%d+')) or 0
    nq = (tonumber(s[5]) or 0) + 1
  end
  if seq == 0 then
    seq = last + 1
  elseif seq <= last then
    return {2, seq}
  elseif seq - 1 - math.min(tonumber(ARGV[12]), seq - 1) > last then
    return {3, seq}
  end
  if nq and nq > tonumber(ARGV[10]) then
    local all = redis.call('HGETALL', sess_key)
    local victim, victim_t = nil, nil
    local horizon = tonumber(now_ms) - tonumber(ARGV[11])
    for i = 1, #all, 2 do
      if string.sub(all[i], 1, 2) == 't:' then
        local t = tonumber(all[i + 1]) or 0
        local id = string.sub(all[i], 3)
        if t < horizon and (not victim_t or t < victim_t) and redis.call('HEXISTS', members_key, id) == 0 then
          victim, victim_t = id, t
        end
      end
    end
    if not victim then return {4, seq} end
    redis.call('HDEL', sess_key, 'q:' .. victim, 't:' .. victim)
    nq = nq - 1
  end
  local tf = 't:' .. seq_from
  if nq then
    redis.call('HSET', sess_key, 'nq', nq)
  end
  if old then redis.call('HDEL', seqs_key, seq_from) end -- moved into the hash below
  if chord ~= '' then
    redis.call('HSET', sess_key, 'off', off, qf, seq, tf, now_ms, 'chord', chord, 'chord_from', from)
  else
    redis.call('HSET', sess_key, 'off', off, qf, seq, tf, now_ms)
  end
elseif chord ~= '' then
  redis.call('HSET', sess_key, 'off', off, 'chord', chord, 'chord_from', from)
else
  redis.call('HSET', sess_key, 'off', off)
end
if practice ~= '' then redis.call('HSET', sess_key, 'practice', practice) end
local id = off .. '-0'
if not redis.call('XADD', stream_key, 'NOMKSTREAM', 'MAXLEN', '~', max_len, id, 'q', seq, 't', now_ms, 'd', payload) then
  redis.call('XADD', stream_key, 'MAXLEN', '~', max_len, id, 'q', seq, 't', now_ms, 'd', payload)
  redis.call('PEXPIREAT', stream_key, exp)
end
local ls = s[3]
if ls then
  local message
  for inst in string.gmatch(ls, '[^,]+') do
    if inst ~= origin then
      message = message or ('p' .. off .. ':' .. seq .. ':' .. payload)
      redis.call('PUBLISH', channel .. inst, message)
    end
  end
end
return {0, off, seq}
