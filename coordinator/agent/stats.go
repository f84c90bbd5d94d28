package agent

import (
	"context"
	"time"

	"github.com/moemesh/moemesh/coordinator/store"
	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
)

// snapshot is the worker's routed-token totals at one time.
type snapshot struct {
	at     time.Time
	totals []uint64 // nil: all zero
}

// window keeps the snapshots of the last StatsWindow and turns them into
// windowed sums.
type window struct {
	span  time.Duration
	snaps []snapshot // oldest first; snaps[0] is at or before now − span once the worker is old enough
}

// add records totals at now and returns the counts since the window's
// start and the span they cover.
func (w *window) add(now time.Time, totals []uint64) ([]uint64, time.Duration) {
	w.snaps = append(w.snaps, snapshot{at: now, totals: totals})
	// Keep one snapshot at or before the window's start as the base.
	for len(w.snaps) > 2 && !w.snaps[1].at.After(now.Add(-w.span)) {
		w.snaps = w.snaps[1:]
	}
	base := w.snaps[0]
	out := make([]uint64, len(totals))
	for i, t := range totals {
		if len(base.totals) == len(totals) && base.totals[i] <= t {
			out[i] = t - base.totals[i]
		} else {
			out[i] = t // another model since the base, or totals restarted
		}
	}
	return out, now.Sub(base.at)
}

// publishStats writes the worker's windowed routed-token counts to etcd
// every StatsInterval until ctx ends.
func (a *agent) publishStats(ctx context.Context, reg *store.Registration) {
	if a.cfg.StatsInterval <= 0 {
		return
	}
	w := &window{span: max(a.cfg.StatsWindow, a.cfg.StatsInterval), snaps: []snapshot{{at: a.started}}}
	t := time.NewTicker(a.cfg.StatsInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		totals := a.cfg.Worker.ExpertTotals()
		if totals == nil {
			continue
		}
		now := time.Now()
		counts, span := w.add(now, totals)
		h, _ := a.cfg.Worker.Health(ctx, &pb.HealthRequest{})
		rec := &pb.ExpertStatsRecord{Id: a.cfg.ID, WindowMs: span.Milliseconds(), Counts: counts,
			UpdatedUnixMs: now.UnixMilli(), PlacementEpoch: h.GetPlacementEpoch()}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if err := a.cfg.Store.PutExpertStats(pctx, reg, rec); err != nil && ctx.Err() == nil {
			a.log.Debug("publishing expert statistics", "err", err)
		}
		cancel()
	}
}
