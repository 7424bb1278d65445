-- PutPairing: make a pairing the session's one live pairing, ending the one
-- before it (both its lookups). Every key shares the {pair} hash tag.
-- Returns 0 when another live pairing holds the PIN, else 1.
local sess_pair_key = KEYS[1] -- {pair}:s:<sid>, the session's pairing (JSON)
local code_key      = KEYS[2] -- {pair}:c:<code key> -> sid
local pin_key       = KEYS[3] -- {pair}:p:<pin key> -> sid
local pairing_json  = ARGV[1]
local sid           = ARGV[2]
local ttl_ms        = ARGV[3] -- the expiry plus the tombstone time
local prefix        = ARGV[4] -- the {pair}: key prefix

if redis.call('EXISTS', pin_key) == 1 then return 0 end
local old = redis.call('GET', sess_pair_key)
if old then
  local o = cjson.decode(old)
  redis.call('DEL', prefix .. 'c:' .. o.ck, prefix .. 'p:' .. o.pk)
end
redis.call('SET', sess_pair_key, pairing_json, 'PX', ttl_ms)
redis.call('SET', code_key, sid, 'PX', ttl_ms)
redis.call('SET', pin_key, sid, 'PX', ttl_ms)
return 1
