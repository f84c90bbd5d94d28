package serving

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/moemesh/moemesh/coordinator/control"
)

// HealthSource reports the coordinator's state.
type HealthSource interface{ Health() control.Health }

// HealthHandler serves GET /health: 200 with the state as JSON once this
// coordinator leads and a placement serves, 503 with the reason before,
// on a standby and while recovering.
func HealthHandler(src HealthSource) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, `{"error":"method not allowed"}`, http.StatusMethodNotAllowed)
			return
		}
		h := src.Health()
		code := http.StatusOK
		if !h.Ready {
			code = http.StatusServiceUnavailable
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(h)
	})
}

// SyncGRPCHealth keeps the standard gRPC health service's overall status
// ("") equal to the coordinator's readiness until ctx ends, checking every
// interval: SERVING on a ready leader, NOT_SERVING otherwise (so a
// Kubernetes Service routes only to the leader).
func SyncGRPCHealth(ctx context.Context, hs *health.Server, src HealthSource, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		st := healthpb.HealthCheckResponse_NOT_SERVING
		if src.Health().Ready {
			st = healthpb.HealthCheckResponse_SERVING
		}
		hs.SetServingStatus("", st)
		hs.SetServingStatus("moemesh.inference.v1.InferenceService", st)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
