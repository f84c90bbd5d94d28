package membership

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/hashicorp/memberlist"
)

// MetaMaxSize is the most bytes a member's encoded Role and Meta may take:
// memberlist's node meta limit.
const MetaMaxSize = memberlist.MetaMaxSize

// EventKind says what happened to a member.
type EventKind int

const (
	// EventJoin: a member joined, or came back after it was dead or left
	// (a restart under the same name).
	EventJoin EventKind = iota
	// EventLeave: a member left gracefully (it called Leave).
	EventLeave
	// EventDead: a member failed: it missed its probes and the suspicion
	// timeout ran out without a refutation.
	EventDead
	// EventUpdate: a member's Meta changed.
	EventUpdate
)

// String returns "join", "leave", "dead" or "update".
func (k EventKind) String() string {
	switch k {
	case EventJoin:
		return "join"
	case EventLeave:
		return "leave"
	case EventDead:
		return "dead"
	case EventUpdate:
		return "update"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one membership change.
type Event struct {
	Kind   EventKind
	Member Member
}

// Member is one node of the cluster as memberlist sees it.
type Member struct {
	// Name is the node name (worker or coordinator id).
	Name string
	// Role is what the member is; empty when its meta could not be decoded.
	Role Role
	// Addr is the host:port of its memberlist.
	Addr string
	// Meta holds its small extra fields, e.g. "addr" = the gRPC address.
	// Each Member owns its map.
	Meta map[string]string
}

// wireMeta is the node meta on the wire: JSON, so that fields can be added.
type wireMeta struct {
	Role Role              `json:"r"`
	Meta map[string]string `json:"m,omitempty"`
}

// encodeMeta encodes role and meta into memberlist's node meta. It fails
// with ErrMetaTooLarge when the encoding exceeds MetaMaxSize.
func encodeMeta(role Role, meta map[string]string) ([]byte, error) {
	b, err := json.Marshal(wireMeta{Role: role, Meta: meta})
	if err != nil {
		return nil, fmt.Errorf("membership: encode meta: %w", err)
	}
	if len(b) > MetaMaxSize {
		return nil, fmt.Errorf("%w: Role and Meta encode to %d bytes, the limit is %d; keep only small fields (addresses, ids) in Meta",
			ErrMetaTooLarge, len(b), MetaMaxSize)
	}
	return b, nil
}

// decodeMeta decodes node meta written by encodeMeta.
func decodeMeta(b []byte) (Role, map[string]string, error) {
	if len(b) == 0 {
		return "", nil, nil
	}
	var w wireMeta
	if err := json.Unmarshal(b, &w); err != nil {
		return "", nil, fmt.Errorf("membership: decode meta: %w", err)
	}
	return w.Role, w.Meta, nil
}

// memberOf converts a memberlist node into a Member. Meta that does not
// decode (a foreign memberlist node) leaves Role and Meta empty.
func memberOf(n *memberlist.Node, log *slog.Logger) Member {
	role, meta, err := decodeMeta(n.Meta)
	if err != nil {
		log.Debug("membership: member with undecodable meta", "member", n.Name, "err", err)
	}
	return Member{Name: n.Name, Role: role, Addr: n.Address(), Meta: meta}
}

// delegate answers memberlist's callbacks: the node meta (Delegate) and
// membership changes (EventDelegate). From the changes it keeps its own view
// of the alive members, so that Members never reads memberlist's node
// structures outside memberlist's lock.
type delegate struct {
	log      *slog.Logger
	onEvent  func(Event)
	selfName string

	metaMu sync.Mutex
	meta   []byte // encoded Role and Meta of the local member

	viewMu sync.Mutex
	view   map[string]Member // alive (and suspect) members by name, self included
	self   Member            // the local member, kept after it leaves
}

var (
	_ memberlist.Delegate      = (*delegate)(nil)
	_ memberlist.EventDelegate = (*delegate)(nil)
)

func newDelegate(cfg Config, log *slog.Logger, meta []byte) *delegate {
	return &delegate{
		log:      log,
		onEvent:  cfg.OnEvent,
		selfName: cfg.Name,
		meta:     meta,
		view:     make(map[string]Member),
		self:     Member{Name: cfg.Name, Role: cfg.Role, Meta: cloneMeta(cfg.Meta)},
	}
}

func (d *delegate) setMeta(b []byte) {
	d.metaMu.Lock()
	d.meta = b
	d.metaMu.Unlock()
}

// NodeMeta returns the encoded local meta; encodeMeta already kept it
// within limit (which memberlist passes as MetaMaxSize).
func (d *delegate) NodeMeta(limit int) []byte {
	d.metaMu.Lock()
	defer d.metaMu.Unlock()
	return d.meta
}

// NotifyMsg, GetBroadcasts, LocalState and MergeRemoteState: the package
// gossips nothing but membership.
func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

// NotifyJoin, NotifyUpdate and NotifyLeave are called by memberlist with
// its node lock held, one at a time.
func (d *delegate) NotifyJoin(n *memberlist.Node)   { d.emit(EventJoin, n) }
func (d *delegate) NotifyUpdate(n *memberlist.Node) { d.emit(EventUpdate, n) }

// NotifyLeave is called for both a graceful leave and a failure; the node's
// state tells them apart.
func (d *delegate) NotifyLeave(n *memberlist.Node) {
	if n.State == memberlist.StateLeft {
		d.emit(EventLeave, n)
		return
	}
	d.emit(EventDead, n)
}

func (d *delegate) emit(kind EventKind, n *memberlist.Node) {
	m := memberOf(n, d.log)
	d.viewMu.Lock()
	switch kind {
	case EventJoin, EventUpdate:
		d.view[m.Name] = m
	case EventLeave, EventDead:
		delete(d.view, m.Name)
	}
	if m.Name == d.selfName {
		d.self = m
	}
	d.viewMu.Unlock()

	d.log.Debug("membership: event", "kind", kind, "member", m.Name, "role", m.Role, "addr", m.Addr)
	if d.onEvent != nil {
		m.Meta = cloneMeta(m.Meta) // the view keeps its own copy
		d.onEvent(Event{Kind: kind, Member: m})
	}
}

// members returns the view sorted by name; the caller owns the result.
func (d *delegate) members() []Member {
	d.viewMu.Lock()
	out := make([]Member, 0, len(d.view))
	for _, m := range d.view {
		m.Meta = cloneMeta(m.Meta)
		out = append(out, m)
	}
	d.viewMu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// local returns the local member; the caller owns the result.
func (d *delegate) local() Member {
	d.viewMu.Lock()
	defer d.viewMu.Unlock()
	m := d.self
	m.Meta = cloneMeta(m.Meta)
	return m
}

// cloneMeta returns a copy of meta that the caller owns (nil for empty).
func cloneMeta(meta map[string]string) map[string]string {
	if len(meta) == 0 {
		return nil
	}
	return maps.Clone(meta)
}
