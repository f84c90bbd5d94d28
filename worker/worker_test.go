package worker

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
	"github.com/moemesh/moemesh/sampling"
)

func TestSamplingParams(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      *pb.Sampling
		want    sampling.Params
		wantErr bool
	}{
		{"absent means greedy", nil, sampling.Greedy(), false},
		{"zero top_p and repetition mean off", &pb.Sampling{Temperature: 0.7, TopK: 20, Seed: 3},
			sampling.Params{Temperature: 0.7, TopK: 20, TopP: 1, RepetitionPenalty: 1, Seed: 3}, false},
		{"explicit values kept", &pb.Sampling{Temperature: 0.6, TopP: 0.95, MinP: 0.1, PresencePenalty: 0.5, RepetitionPenalty: 1.1},
			sampling.Params{Temperature: 0.6, TopP: 0.95, MinP: 0.1, PresencePenalty: 0.5, RepetitionPenalty: 1.1}, false},
		{"frequency and top-k -1", &pb.Sampling{Temperature: 1, TopK: -1, FrequencyPenalty: -0.5, Seed: 4},
			sampling.Params{Temperature: 1, TopK: -1, TopP: 1, RepetitionPenalty: 1, FrequencyPenalty: -0.5, Seed: 4}, false},
		{"negative temperature refused", &pb.Sampling{Temperature: -1}, sampling.Params{}, true},
		{"frequency out of range refused", &pb.Sampling{Temperature: 1, FrequencyPenalty: 2.5}, sampling.Params{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := samplingParams(tc.in)
			if tc.wantErr {
				if !errors.Is(err, sampling.ErrBadParams) {
					t.Fatalf("err = %v, want ErrBadParams", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

// TestSeqSamplerHistory: without prompt_len, tokens fed before the first
// sample are the prompt, every later one a generated token; with it, the
// position decides.
func TestSeqSamplerHistory(t *testing.T) {
	type feed struct {
		tokens           []int32
		start, promptLen int
		sampledBefore    bool
	}
	for _, tc := range []struct {
		name           string
		feeds          []feed
		prompt, genned []int
	}{
		{"by first sample", []feed{{[]int32{1, 2}, 0, 0, false}, {[]int32{3}, 2, 0, false}, {[]int32{9}, 3, 0, true}, {[]int32{8}, 4, 0, true}},
			[]int{1, 2, 3}, []int{9, 8}},
		{"resubmitted as one prefill", []feed{{[]int32{1, 2, 3, 9, 8}, 0, 3, false}, {[]int32{7}, 5, 3, true}},
			[]int{1, 2, 3}, []int{9, 8, 7}},
		{"resubmitted in chunks", []feed{{[]int32{1, 2}, 0, 3, false}, {[]int32{3, 9}, 2, 3, false}, {[]int32{8}, 4, 3, false}},
			[]int{1, 2, 3}, []int{9, 8}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := &seqSampler{}
			for _, f := range tc.feeds {
				st.hasSampled = f.sampledBefore
				st.feed(f.tokens, f.start, f.promptLen)
			}
			if diff := cmp.Diff(tc.prompt, st.prompt); diff != "" {
				t.Errorf("prompt (-want +got)\n%s", diff)
			}
			if diff := cmp.Diff(tc.genned, st.generated); diff != "" {
				t.Errorf("generated (-want +got)\n%s", diff)
			}
		})
	}
}

func TestPlacementFromProto(t *testing.T) {
	layer := func(l uint32, ws ...[]uint32) *pb.LayerPlacement {
		lp := &pb.LayerPlacement{Layer: l}
		for _, w := range ws {
			lp.Workers = append(lp.Workers, &pb.WorkerExperts{Experts: w})
		}
		return lp
	}
	a := func(l uint32) *pb.LayerPlacement { return layer(l, []uint32{0, 2}, []uint32{1, 3}) }
	b := func(l uint32) *pb.LayerPlacement { return layer(l, []uint32{0, 1}, []uint32{2, 3}) }
	ownersA := [][]int{{0}, {1}, {0}, {1}}
	ownersB := [][]int{{0}, {0}, {1}, {1}}
	for _, tc := range []struct {
		name   string
		p      *pb.Placement
		owners [][][]int // per layer; nil: an error is expected
	}{
		{"one for all layers", &pb.Placement{Epoch: 1, Layers: []*pb.LayerPlacement{a(0)}}, [][][]int{ownersA, ownersA}},
		{"one per layer", &pb.Placement{Epoch: 1, Layers: []*pb.LayerPlacement{b(1), a(0)}}, [][][]int{ownersA, ownersB}},
		{"missing", nil, nil},
		{"wrong layer count", &pb.Placement{Layers: []*pb.LayerPlacement{a(0), a(1), a(2)}}, nil},
		{"layer twice", &pb.Placement{Layers: []*pb.LayerPlacement{a(0), a(0)}}, nil},
		{"layer out of range", &pb.Placement{Layers: []*pb.LayerPlacement{a(0), a(5)}}, nil},
		{"wrong worker count", &pb.Placement{Layers: []*pb.LayerPlacement{layer(0, []uint32{0, 1, 2, 3})}}, nil},
		{"expert out of range", &pb.Placement{Layers: []*pb.LayerPlacement{layer(0, []uint32{0, 9}, []uint32{1, 2, 3})}}, nil},
		{"expert unplaced", &pb.Placement{Layers: []*pb.LayerPlacement{layer(0, []uint32{0}, []uint32{1, 3})}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pls, err := PlacementFromProto(tc.p, 2, 4, 2)
			if tc.owners == nil {
				if !errors.Is(err, ErrBadRequest) {
					t.Errorf("err = %v, want ErrBadRequest", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for l, want := range tc.owners {
				if diff := cmp.Diff(want, pls[l].Owners); diff != "" {
					t.Errorf("layer %d owners (-want +got)\n%s", l, diff)
				}
			}
		})
	}
}
