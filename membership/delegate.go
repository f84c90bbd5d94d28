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
//
// Leaving marks a member that is about to Leave. memberlist v0.7.0 never
// fills Node.State (nodeState's own State field shadows it), so NotifyLeave
// cannot tell a graceful leave from a failure by the node's state. Leave
// therefore gossips this mark in the meta first, and NotifyLeave reads it
// from the last meta it knows. Should the mark be lost, the leave is
// reported as EventDead: the safe mistake.
type wireMeta struct {
	Role    Role              `json:"r"`
	Meta    map[string]string `json:"m,omitempty"`
	Leaving bool              `json:"l,omitempty"`
}

// encodeMeta encodes role and meta into memberlist's node meta. It fails
// with ErrMetaTooLarge when the encoding, with room for the leaving mark,
// exceeds MetaMaxSize, so that Leave can always add the mark.
func encodeMeta(role Role, meta map[string]string) ([]byte, error) {
	marked, err := encodeWire(wireMeta{Role: role, Meta: meta, Leaving: true})
	if err != nil {
		return nil, err
	}
	if len(marked) > MetaMaxSize {
		return nil, fmt.Errorf("%w: Role and Meta encode to %d bytes with the leave mark, the limit is %d; keep only small fields (addresses, ids) in Meta",
			ErrMetaTooLarge, len(marked), MetaMaxSize)
	}
	return encodeWire(wireMeta{Role: role, Meta: meta})
}

func encodeWire(w wireMeta) ([]byte, error) {
	b, err := json.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("membership: encode meta: %w", err)
	}
	return b, nil
}

// decodeMeta decodes node meta written by encodeWire; empty meta decodes to
// the zero wireMeta, and an empty Meta map to nil.
func decodeMeta(b []byte) (wireMeta, error) {
	var w wireMeta
	if len(b) == 0 {
		return w, nil
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return wireMeta{}, fmt.Errorf("membership: decode meta: %w", err)
	}
	w.Meta = cloneMeta(w.Meta) // empty is nil, as on the sending side
	return w, nil
}

// memberOf converts a memberlist node into a Member and reports whether its
// meta carries the leaving mark. Meta that does not decode (a foreign
// memberlist node) leaves Role and Meta empty.
func memberOf(n *memberlist.Node, log *slog.Logger) (Member, bool) {
	w, err := decodeMeta(n.Meta)
	if err != nil {
		log.Debug("membership: member with undecodable meta", "member", n.Name, "err", err)
	}
	return Member{Name: n.Name, Role: w.Role, Addr: n.Address(), Meta: w.Meta}, w.Leaving
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
func (d *delegate) NotifyJoin(n *memberlist.Node) {
	m, _ := memberOf(n, d.log)
	d.emit(EventJoin, m)
}

// NotifyUpdate reports a change of meta. The leaving mark alone is no
// change of Meta: it updates the view and emits nothing.
func (d *delegate) NotifyUpdate(n *memberlist.Node) {
	m, leaving := memberOf(n, d.log)
	if leaving {
		d.store(EventUpdate, m)
		return
	}
	d.emit(EventUpdate, m)
}

// NotifyLeave is called for both a graceful leave and a failure. The
// leaving mark in the node's last meta tells them apart (see wireMeta); the
// node's State does too once memberlist fills it.
func (d *delegate) NotifyLeave(n *memberlist.Node) {
	m, leaving := memberOf(n, d.log)
	if leaving || n.State == memberlist.StateLeft {
		d.emit(EventLeave, m)
		return
	}
	d.emit(EventDead, m)
}

// store applies an event to the view.
func (d *delegate) store(kind EventKind, m Member) {
	d.viewMu.Lock()
	defer d.viewMu.Unlock()
	switch kind {
	case EventJoin, EventUpdate:
		d.view[m.Name] = m
	case EventLeave, EventDead:
		delete(d.view, m.Name)
	}
	if m.Name == d.selfName {
		d.self = m
	}
}

// emit applies an event to the view and hands it to OnEvent.
func (d *delegate) emit(kind EventKind, m Member) {
	d.store(kind, m)
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
