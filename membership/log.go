package membership

import (
	"bytes"
	"context"
	"log"
	"log/slog"
)

// newStdLogger returns a *log.Logger for memberlist that forwards each line
// to l at the level memberlist wrote in front of it ("[DEBUG]", "[INFO]",
// "[WARN]", "[ERR]"), so that memberlist is as quiet as l's handler asks.
func newStdLogger(l *slog.Logger) *log.Logger {
	return log.New(slogWriter{l}, "", 0)
}

type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	level, msg := parseLogLine(p)
	if w.l.Enabled(context.Background(), level) {
		w.l.Log(context.Background(), level, msg, "component", "memberlist")
	}
	return len(p), nil
}

// parseLogLine splits one memberlist log line into its level and message,
// dropping the level tag and the "memberlist: " prefix. A line without a
// known tag is logged at Info.
func parseLogLine(p []byte) (slog.Level, string) {
	p = bytes.TrimRight(p, "\r\n")
	level := slog.LevelInfo
	for _, t := range logTags {
		if rest, ok := bytes.CutPrefix(p, []byte(t.tag)); ok {
			level, p = t.level, bytes.TrimLeft(rest, " ")
			break
		}
	}
	p, _ = bytes.CutPrefix(p, []byte("memberlist: "))
	return level, string(p)
}

var logTags = []struct {
	tag   string
	level slog.Level
}{
	{"[TRACE]", slog.LevelDebug - 4},
	{"[DEBUG]", slog.LevelDebug},
	{"[INFO]", slog.LevelInfo},
	{"[WARN]", slog.LevelWarn},
	{"[ERR]", slog.LevelError},
	{"[ERROR]", slog.LevelError},
}
