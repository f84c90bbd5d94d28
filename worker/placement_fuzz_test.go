package worker

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
	"github.com/moemesh/moemesh/sharding"
)

// FuzzPlacementFromProto decodes LoadShardRequest.placement as a
// coordinator (or anyone reaching WorkerService) could send it: no input
// may panic; a refusal is ErrBadRequest; an accepted placement has one
// entry per layer, one slot list per worker, and expert ids in range.
func FuzzPlacementFromProto(f *testing.F) {
	for _, p := range []*pb.Placement{
		placementProto(1, uniformN(2, 4)),
		placementProto(2, uniformN(2, 4), uniformN(2, 4)),
		{Epoch: 3, Layers: []*pb.LayerPlacement{{Layer: 7}}},
	} {
		b, err := proto.Marshal(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint8(2), uint8(4), uint8(2))
	}
	f.Fuzz(func(t *testing.T, b []byte, workers, experts, layers uint8) {
		var p pb.Placement
		if err := proto.Unmarshal(b, &p); err != nil {
			return
		}
		w, e, l := int(workers%9)+1, int(experts%33)+1, int(layers%5)+1
		out, err := PlacementFromProto(&p, w, e, l)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("refusal %v does not wrap ErrBadRequest", err)
			}
			return
		}
		if len(out) != l {
			t.Fatalf("%d layer placements for %d layers", len(out), l)
		}
		for _, pl := range out {
			if pl == nil || len(pl.Slots) != w {
				t.Fatalf("placement %+v for %d workers", pl, w)
			}
			for _, slots := range pl.Slots {
				for _, x := range slots {
					if x < 0 || x >= e {
						t.Fatalf("expert %d outside [0, %d)", x, e)
					}
				}
			}
		}
	})
}

// uniformN places experts round-robin on workers.
func uniformN(workers, experts int) *sharding.Placement {
	pl := &sharding.Placement{Workers: workers, Experts: experts, Slots: make([][]int, workers), Owners: make([][]int, experts)}
	for e := range experts {
		pl.Slots[e%workers] = append(pl.Slots[e%workers], e)
		pl.Owners[e] = append(pl.Owners[e], e%workers)
	}
	return pl
}
