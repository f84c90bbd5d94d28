// Package zapslog routes the zap logs of the etcd client and server to a
// log/slog logger, keeping only records at or above a minimum level so etcd
// stays quiet in moemesh's logs.
package zapslog

import (
	"context"
	"log/slog"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// New returns a zap logger that writes records at min and above to lg. A nil
// lg drops everything.
func New(lg *slog.Logger, min zapcore.Level) *zap.Logger { return NewUntil(lg, min, nil) }

// NewUntil is New, silent once quiet is closed (etcd's server reports its
// own orderly shutdown as errors).
func NewUntil(lg *slog.Logger, min zapcore.Level, quiet <-chan struct{}) *zap.Logger {
	if lg == nil {
		return zap.NewNop()
	}
	return zap.New(&core{lg: lg, min: min, quiet: quiet})
}

type core struct {
	lg     *slog.Logger
	min    zapcore.Level
	quiet  <-chan struct{}
	fields []zapcore.Field
}

func (c *core) Enabled(l zapcore.Level) bool {
	select {
	case <-c.quiet:
		return false
	default:
		return l >= c.min
	}
}

func (c *core) With(fields []zapcore.Field) zapcore.Core {
	return &core{lg: c.lg, min: c.min, quiet: c.quiet, fields: append(c.fields[:len(c.fields):len(c.fields)], fields...)}
}

func (c *core) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *core) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fields {
		f.AddTo(enc)
	}
	attrs := make([]slog.Attr, 0, len(enc.Fields)+1)
	if e.LoggerName != "" {
		attrs = append(attrs, slog.String("logger", e.LoggerName))
	}
	for k, v := range enc.Fields {
		attrs = append(attrs, slog.Any(k, v))
	}
	c.lg.LogAttrs(context.Background(), level(e.Level), e.Message, attrs...)
	return nil
}

func (c *core) Sync() error { return nil }

func level(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return slog.LevelDebug
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}
