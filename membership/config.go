package membership

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// Role of a member.
type Role string

const (
	// RoleWorker is a worker process: it hosts shards and expert slots.
	RoleWorker Role = "worker"
	// RoleCoordinator is a coordinator replica; the leading one acts on
	// EventDead and EventLeave.
	RoleCoordinator Role = "coordinator"
)

// Sentinel errors. Match them with errors.Is.
var (
	// ErrInvalidConfig wraps every error Config.Validate returns.
	ErrInvalidConfig = errors.New("membership: invalid config")
	// ErrMetaTooLarge is returned when the encoded role and meta exceed
	// memberlist's node meta limit (MetaMaxSize bytes). Meta is never
	// truncated.
	ErrMetaTooLarge = errors.New("membership: meta too large")
	// ErrClosed is returned by calls on a Membership after Shutdown (and,
	// for UpdateMeta, after Leave).
	ErrClosed = errors.New("membership: closed")
	// ErrJoinFailed is returned when none of the seeds could be contacted.
	ErrJoinFailed = errors.New("membership: join failed")
)

// Config configures a Membership. Start from DefaultConfig and set Name,
// Role and Meta; the timers are tuned for fast failure detection on a LAN.
type Config struct {
	// Name is the node name, unique in the cluster (the worker or
	// coordinator id). A restarted process reuses its name.
	Name string
	// Role is what the member is; it travels in the node meta.
	Role Role
	// Meta holds small extra fields gossiped with the member, e.g. "addr"
	// = its gRPC address. Role and Meta together must encode (JSON) to at
	// most MetaMaxSize bytes less 9 kept for the leaving mark (see Leave).
	Meta map[string]string

	// BindAddr is the IP to listen on for both TCP and UDP.
	BindAddr string
	// BindPort is the port for both TCP and UDP; 0 picks a free port.
	BindPort int
	// AdvertiseAddr is the IP the others reach this member at; "" means the
	// bound one (a private interface address when BindAddr is 0.0.0.0).
	AdvertiseAddr string
	// AdvertisePort is the port the others reach this member at; 0 means
	// the bound one. It needs AdvertiseAddr and a fixed BindPort.
	AdvertisePort int

	// ProbeInterval is the time between two probes of one random member.
	ProbeInterval time.Duration
	// ProbeTimeout is how long a direct probe waits for its ack before
	// indirect probes start; it must be below ProbeInterval.
	ProbeTimeout time.Duration
	// SuspicionMult scales how long a member stays suspect before it is
	// declared dead: SuspicionMult·max(1, log10 N)·ProbeInterval.
	SuspicionMult int
	// GossipInterval is the time between gossip rounds, which spread
	// suspect, dead and alive messages.
	GossipInterval time.Duration
	// PushPullInterval is the time between full state syncs with one
	// random member; they repair any gossip that was lost.
	PushPullInterval time.Duration
	// TCPTimeout bounds dialing, reading and writing a stream (join and
	// full sync).
	TCPTimeout time.Duration
	// RetransmitMult scales how many times a gossip message is sent:
	// RetransmitMult·ceil(log10(N+1)).
	RetransmitMult int
	// DeadNodeReclaimTime is how long after a member was declared dead its
	// name may be taken by a node at another address; 0 never allows it.
	DeadNodeReclaimTime time.Duration

	// SecretKey, when set, encrypts and authenticates every gossip packet
	// and stream with AES-GCM (memberlist's keyring); members without the
	// same key are refused both ways. 16, 24 or 32 bytes (AES-128/192/256).
	SecretKey []byte

	// Log receives this package's and memberlist's logs; nil means
	// slog.Default().
	Log *slog.Logger

	// OnEvent receives every membership change, the local member's own
	// join included; nil drops them.
	//
	// Concurrency contract: it is called from memberlist's goroutines, one
	// event at a time, in order per member, while memberlist holds its
	// node lock. It must not block (hand the event off to a buffered
	// channel or a queue) and must not call back into the Membership
	// (Members, Local, UpdateMeta, … would deadlock).
	OnEvent func(Event)
}

// DefaultConfig returns a complete Config for a LAN or loopback cluster,
// tuned so that a killed member is declared dead in about 2 s.
//
// How long detection takes: each member probes one other member every
// ProbeInterval. After a kill, the first survivor to probe the dead member
// does so within one ProbeInterval on average (0 to 2 intervals in a
// three-member cluster, where each survivor alternates between two
// targets). That probe fails at the end of its ProbeInterval (direct ping,
// then indirect pings and a TCP ping all wait until then). The member then
// stays suspect for SuspicionMult·max(1, log10 N)·ProbeInterval before the
// prober declares it dead and gossips it; the others get the dead message
// within a gossip round or two. With the values below and N < 10:
//
//	detection ≈ [0, 1 s) + 0.5 s + 2·0.5 s ≈ 1.5–2.5 s, about 1.8 s typical
//
// On loopback the test TestDetectionTimeDefaults measures it (see
// docs/membership.md). For N ≥ 10 the suspicion term grows with log10 N
// (1.3 s at N = 20, 1.5 s at N = 32).
//
// SuspicionMult is 2 on purpose: memberlist waits for SuspicionMult−2
// independent confirmations to shorten the suspicion timer from its
// maximum (a multiple of the minimum) to the minimum. With 2 it expects
// none and uses the minimum at once, so detection does not depend on other
// members happening to probe the dead one too. A live member that was
// wrongly suspected has the whole suspicion time (1 s, 5 round trips of
// probes and gossip) to refute it.
func DefaultConfig() Config {
	return Config{
		Name:                "",                     // set by the caller: the worker or coordinator id
		Role:                RoleWorker,             // most members are workers; coordinators set RoleCoordinator
		Meta:                nil,                    // set by the caller, e.g. {"addr": grpc address}
		BindAddr:            "127.0.0.1",            // safe for a one-machine start; set a reachable IP (or 0.0.0.0) in a cluster
		BindPort:            0,                      // a free port; set a fixed one when seeds must be known in advance
		AdvertiseAddr:       "",                     // the bound address, right unless behind NAT
		AdvertisePort:       0,                      // the bound port
		ProbeInterval:       500 * time.Millisecond, // half of memberlist's LAN value: detection is ~3.5 intervals
		ProbeTimeout:        200 * time.Millisecond, // far above a LAN/loopback RTT, leaves 300 ms for indirect probes
		SuspicionMult:       2,                      // suspicion = 2·ProbeInterval = 1 s, without waiting for confirmations
		GossipInterval:      100 * time.Millisecond, // a dead notice reaches everyone within a few rounds; cheap at cluster sizes of tens
		PushPullInterval:    10 * time.Second,       // full syncs repair lost gossip and restarts; cheap for tens of members
		TCPTimeout:          2 * time.Second,        // a LAN stream that takes longer is broken; bounds each seed in Join
		RetransmitMult:      4,                      // memberlist's LAN value: gossip reaches everyone with high probability
		DeadNodeReclaimTime: time.Millisecond,       // a restarted member (new port) may take its name as soon as it is dead
		SecretKey:           nil,                    // plaintext gossip; set a shared key in a cluster (docs/security.md)
		Log:                 nil,                    // slog.Default()
		OnEvent:             nil,                    // set by the caller
	}
}

// Validate reports the first setting that is out of range, naming the field
// and what to set it to. The error wraps ErrInvalidConfig, or ErrMetaTooLarge
// when Meta is over the limit.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	switch {
	case c.Name == "":
		return bad("Name is empty; set it to the worker or coordinator id, unique in the cluster")
	case c.Role != RoleWorker && c.Role != RoleCoordinator:
		return bad("Role is %q; set RoleWorker or RoleCoordinator", c.Role)
	case c.BindAddr == "":
		return bad(`BindAddr is empty; set an IP such as "127.0.0.1" or "0.0.0.0"`)
	case net.ParseIP(c.BindAddr) == nil:
		return bad("BindAddr %q is not an IP address; set an IP such as \"127.0.0.1\"", c.BindAddr)
	case c.BindPort < 0 || c.BindPort > 65535:
		return bad("BindPort is %d; set 0 (a free port) or a port in [1, 65535]", c.BindPort)
	case c.AdvertiseAddr != "" && net.ParseIP(c.AdvertiseAddr) == nil:
		return bad("AdvertiseAddr %q is not an IP address; set an IP or leave it empty for the bound one", c.AdvertiseAddr)
	case c.AdvertisePort < 0 || c.AdvertisePort > 65535:
		return bad("AdvertisePort is %d; set 0 (the bound port) or a port in [1, 65535]", c.AdvertisePort)
	case c.AdvertisePort != 0 && c.AdvertiseAddr == "":
		return bad("AdvertisePort is %d but AdvertiseAddr is empty, and memberlist then advertises the bound port; set AdvertiseAddr too, or AdvertisePort to 0", c.AdvertisePort)
	case c.AdvertisePort != 0 && c.BindPort == 0:
		return bad("AdvertisePort is %d but BindPort is 0, and memberlist then advertises the picked port; set a fixed BindPort, or AdvertisePort to 0", c.AdvertisePort)
	case c.ProbeInterval <= 0:
		return bad("ProbeInterval is %v; set a positive duration such as 500ms", c.ProbeInterval)
	case c.ProbeTimeout <= 0 || c.ProbeTimeout >= c.ProbeInterval:
		return bad("ProbeTimeout is %v; set a positive duration below ProbeInterval (%v), such as 200ms", c.ProbeTimeout, c.ProbeInterval)
	case c.SuspicionMult < 1:
		return bad("SuspicionMult is %d; set at least 1 (2 is the default)", c.SuspicionMult)
	case c.GossipInterval <= 0:
		return bad("GossipInterval is %v; set a positive duration such as 100ms", c.GossipInterval)
	case c.PushPullInterval <= 0:
		return bad("PushPullInterval is %v; set a positive duration such as 10s", c.PushPullInterval)
	case c.TCPTimeout <= 0:
		return bad("TCPTimeout is %v; set a positive duration such as 2s", c.TCPTimeout)
	case c.RetransmitMult < 1:
		return bad("RetransmitMult is %d; set at least 1 (4 is the default)", c.RetransmitMult)
	case len(c.SecretKey) != 0 && len(c.SecretKey) != 16 && len(c.SecretKey) != 24 && len(c.SecretKey) != 32:
		return bad("SecretKey is %d bytes; set 16, 24 or 32 bytes (AES-128, -192, -256), or none for plaintext gossip", len(c.SecretKey))
	case c.DeadNodeReclaimTime < 0:
		return bad("DeadNodeReclaimTime is %v; set 0 (never) or a positive duration such as 1ms", c.DeadNodeReclaimTime)
	}
	if _, err := encodeMeta(c.Role, c.Meta); err != nil {
		return err
	}
	return nil
}
