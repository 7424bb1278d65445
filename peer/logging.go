package peer

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pion/logging"
)

// slogFactory adapts pion's logger factory to a *slog.Logger so pion never
// prints on its own. pion's Trace and Debug become slog Debug.
type slogFactory struct{ log *slog.Logger }

var _ logging.LoggerFactory = slogFactory{}

func (f slogFactory) NewLogger(scope string) logging.LeveledLogger {
	return slogLeveled{log: f.log.With("pion", scope)}
}

type slogLeveled struct{ log *slog.Logger }

func (l slogLeveled) logf(level slog.Level, format string, args ...any) {
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	l.log.Log(context.Background(), level, fmt.Sprintf(format, args...))
}

func (l slogLeveled) Trace(msg string)                  { l.logf(slog.LevelDebug, "%s", msg) }
func (l slogLeveled) Tracef(format string, args ...any) { l.logf(slog.LevelDebug, format, args...) }
func (l slogLeveled) Debug(msg string)                  { l.logf(slog.LevelDebug, "%s", msg) }
func (l slogLeveled) Debugf(format string, args ...any) { l.logf(slog.LevelDebug, format, args...) }
func (l slogLeveled) Info(msg string)                   { l.logf(slog.LevelDebug, "%s", msg) }
func (l slogLeveled) Infof(format string, args ...any)  { l.logf(slog.LevelDebug, format, args...) }
func (l slogLeveled) Warn(msg string)                   { l.logf(slog.LevelWarn, "%s", msg) }
func (l slogLeveled) Warnf(format string, args ...any)  { l.logf(slog.LevelWarn, format, args...) }
func (l slogLeveled) Error(msg string)                  { l.logf(slog.LevelError, "%s", msg) }
func (l slogLeveled) Errorf(format string, args ...any) { l.logf(slog.LevelError, format, args...) }

// discardLogger is used when Config.Logger is nil.
func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
