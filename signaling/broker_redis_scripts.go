package signaling

import (
	_ "embed"

	"github.com/redis/go-redis/v9"
)

// The RedisBroker's Lua scripts, one file each under lua/. Each file says
// what it does and what it returns, and names its KEYS and ARGV at its top;
// the callers pass them in that order. go-redis runs a script by its SHA1
// (EVALSHA) and loads it on the first NOSCRIPT.
var (
	//go:embed lua/create_session.lua
	luaCreateSession string
	//go:embed lua/extend_session.lua
	luaExtendSession string
	//go:embed lua/join.lua
	luaJoin string
	//go:embed lua/admit.lua
	luaAdmit string
	//go:embed lua/leave.lua
	luaLeave string
	//go:embed lua/drop_ghosts.lua
	luaDropGhosts string
	//go:embed lua/publish.lua
	luaPublish string
	//go:embed lua/send.lua
	luaSend string
	//go:embed lua/subscribe.lua
	luaSubscribe string
	//go:embed lua/unsubscribe.lua
	luaUnsubscribe string

	redisCreateScript      = redis.NewScript(luaCreateSession)
	redisExtendScript      = redis.NewScript(luaExtendSession)
	redisJoinScript        = redis.NewScript(luaJoin)
	redisLeaveScript       = redis.NewScript(luaLeave)
	redisAdmitScript       = redis.NewScript(luaAdmit)
	redisDropGhostsScript  = redis.NewScript(luaDropGhosts)
	redisPublishScript     = redis.NewScript(luaPublish)
	redisSendScript        = redis.NewScript(luaSend)
	redisSubscribeScript   = redis.NewScript(luaSubscribe)
	redisUnsubscribeScript = redis.NewScript(luaUnsubscribe)
)
