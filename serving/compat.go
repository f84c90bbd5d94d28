package serving

import (
	"github.com/moemesh/moemesh/scheduler"
)

// Coordinator is everything the front doors serve in one value: the
// scheduler's Submit beside the control plane's model and health.
type Coordinator interface {
	scheduler.Submitter
	ModelSource
	HealthSource
}

// Servers are the running front doors (the name Serve returned before
// Server).
type Servers = Server

// Serve starts the front doors over c (not nil) with DefaultConfig: New
// then Server.Serve. Use New for other settings.
func Serve(l *Listeners, c Coordinator) *Servers {
	s, err := New(DefaultConfig(), Deps{Submitter: c, Model: c, Health: c})
	if err != nil {
		// DefaultConfig reads no file, so only a nil c fails.
		panic(err)
	}
	s.Serve(l)
	return s
}
