package coordinator

import (
	"fmt"
	"regexp"
	"strconv"

	"google.golang.org/grpc/status"
)

// WorkerError is a cluster call that failed, attributed to the worker at
// its root: the worker whose own connection failed (UNAVAILABLE), or the
// peer another worker reports lost (ABORTED, "collective: peer lost"), never
// a worker whose call was only cancelled because of that first failure.
// status.Code sees through it to the code of Err.
type WorkerError struct {
	// Worker is the worker at the root of the failure; Addr its address.
	Worker int
	Addr   string
	// Unreachable: Worker's connection failed, or its peers lost it.
	Unreachable bool
	// Reporter is the worker whose call returned Err: Worker itself, or the
	// peer that reported losing it.
	Reporter int
	// Err is Reporter's error.
	Err error
}

func (e *WorkerError) Error() string {
	switch {
	case e.Unreachable && e.Reporter == e.Worker:
		return fmt.Sprintf("worker %d (%s) is unreachable: %v", e.Worker, e.Addr, e.Err)
	case e.Unreachable:
		return fmt.Sprintf("worker %d (%s) is unreachable: worker %d lost it: %v", e.Worker, e.Addr, e.Reporter, e.Err)
	}
	return fmt.Sprintf("worker %d (%s): %v", e.Worker, e.Addr, e.Err)
}

func (e *WorkerError) Unwrap() error { return e.Err }

// lostPeerRE finds the peer in a worker's "collective: peer lost" error
// (worker/collective/link.go, mesh.go), the only place it crosses the wire.
var lostPeerRE = regexp.MustCompile(`collective: peer lost: (?:sending to |connecting to )?worker (\d+)`)

// lostPeer returns the peer a worker's error says it lost, or -1.
func lostPeer(err error, workers int) int {
	m := lostPeerRE.FindStringSubmatch(status.Convert(err).Message())
	if m == nil {
		return -1
	}
	p, perr := strconv.Atoi(m[1])
	if perr != nil || p < 0 || p >= workers {
		return -1
	}
	return p
}
