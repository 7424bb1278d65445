-- TakePairing: end and return the live pairing a code's lookup names. Its
-- two lookups become tombstones ('') for their remaining time, so a second
-- taker learns it was used. Returns false (not found), '' (used), 'x'
-- (expired: left as it is) or the pairing's JSON.
local lookup_key = KEYS[1] -- {pair}:c:<code key> or {pair}:p:<pin key>
local prefix     = ARGV[1] -- the {pair}: key prefix
local now_ms     = ARGV[2]

local sid = redis.call('GET', lookup_key)
if not sid then return false end
if sid == '' then return '' end
local sess_pair_key = prefix .. 's:' .. sid
local g = redis.call('GET', sess_pair_key)
if not g then redis.call('DEL', lookup_key) return false end
local p = cjson.decode(g)
local ck, pk = prefix .. 'c:' .. p.ck, prefix .. 'p:' .. p.pk
if ck ~= lookup_key and pk ~= lookup_key then redis.call('DEL', lookup_key) return false end
if tonumber(now_ms) >= tonumber(p.xms) then return 'x' end
redis.call('DEL', sess_pair_key)
for _, k in ipairs({ck, pk}) do
  local ttl = redis.call('PTTL', k)
  if ttl > 0 then redis.call('SET', k, '', 'PX', ttl) end
end
return g
