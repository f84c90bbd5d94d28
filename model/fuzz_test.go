package model

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseHeader feeds arbitrary bytes to the safetensors parser as a whole
// file. It must never panic; whatever it accepts must be readable (every
// tensor within the data, no overlaps) through the Checkpoint methods.
func FuzzParseHeader(f *testing.F) {
	// Real tensor names and layouts written by WriteSafetensors, small
	// enough to keep mutation fast.
	path := filepath.Join(f.TempDir(), "seed.safetensors")
	err := WriteSafetensors(path, []WriteTensor{
		{Name: "model.layers.0.self_attn.q_proj.weight", DType: DTypeBF16, Shape: []int64{4, 2}, Data: make([]byte, 16)},
		{Name: "model.layers.0.mlp.gate.weight", DType: DTypeF32, Shape: []int64{2, 2}, Data: make([]byte, 16)},
		{Name: "model.norm.weight", DType: DTypeF16, Shape: []int64{2}, Data: make([]byte, 4)},
	}, map[string]string{"format": "pt"})
	if err != nil {
		f.Fatal(err)
	}
	seed, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add(rawSafetensors(`{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"BF16","shape":[1,3],"data_offsets":[16,22]}}`, 22))
	f.Add(rawSafetensors(`{"h":{"dtype":"F16","shape":[2,1],"data_offsets":[0,4]},"__metadata__":{"k":"v"}}`, 4))
	f.Add(rawSafetensors(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}}`, 6))
	f.Add(rawSafetensors(`{}`, 0))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})

	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := parseSafetensorsHeader("fuzz.safetensors", data)
		if err != nil {
			var ce *CheckpointError
			if !errors.As(err, &ce) || !errors.Is(err, ErrBadCheckpoint) {
				t.Fatalf("error %v is not a *CheckpointError wrapping ErrBadCheckpoint", err)
			}
			return
		}
		ck := &Checkpoint{path: "fuzz.safetensors", tensors: map[string]*checkpointTensor{}}
		sh := &safetensorsShard{path: "fuzz.safetensors", data: data}
		ck.shards = append(ck.shards, sh)
		if err := ck.addShard(sh); err != nil {
			t.Fatalf("addShard after a successful parse: %v", err)
		}
		for name, info := range h.tensors {
			if info.Offset < h.dataStart || info.Offset+info.Size > int64(len(data)) {
				t.Fatalf("tensor %q [%d, %d) outside the data [%d, %d)", name, info.Offset, info.Offset+info.Size, h.dataStart, len(data))
			}
			if info.Elements()*DTypeSize(info.DType) != info.Size {
				t.Fatalf("tensor %q: %d elements of %s in %d bytes", name, info.Elements(), info.DType, info.Size)
			}
			if !readableDType(info.DType) {
				continue
			}
			vals, err := ck.F32(name)
			if err != nil || int64(len(vals)) != info.Elements() {
				t.Fatalf("F32(%q) = %d values, %v; want %d", name, len(vals), err, info.Elements())
			}
			if len(info.Shape) == 2 {
				r, c := int(info.Shape[0]), int(info.Shape[1])
				if _, err := ck.Rows(name, r/2, r); err != nil {
					t.Fatalf("Rows(%q, %d, %d): %v", name, r/2, r, err)
				}
				if _, err := ck.Cols(name, c/2, c); err != nil {
					t.Fatalf("Cols(%q, %d, %d): %v", name, c/2, c, err)
				}
				if _, err := ck.Rows(name, 0, r+1); !errors.Is(err, ErrBadRange) {
					t.Fatalf("Rows(%q, 0, %d) = %v, want ErrBadRange", name, r+1, err)
				}
			}
		}
	})
}

// FuzzParseConfig feeds arbitrary bytes to ParseConfig: it must never panic,
// every error must wrap ErrBadConfig, and an accepted config must survive
// Marshal and ParseConfig again.
func FuzzParseConfig(f *testing.F) {
	for _, p := range []string{"tiny-a/config.json", "tiny-c/config.json", "configs/qwen3-235b-a22b.json", "configs/qwen3-8b.json"} {
		data, err := os.ReadFile(filepath.Join("testdata", p))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{"model_type":"qwen3","vocab_size":1,"hidden_size":2,"num_hidden_layers":1,"num_attention_heads":1,"intermediate_size":1,"eos_token_id":[1,2]}`))
	f.Add([]byte(`{"model_type":"qwen3_moe","rope_scaling":{"type":"yarn"}}`))
	f.Add([]byte(`null`))

	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data)
		if err != nil {
			if !errors.Is(err, ErrBadConfig) {
				t.Fatalf("error %v does not wrap ErrBadConfig", err)
			}
			return
		}
		for i := -1; i <= cfg.NumHiddenLayers && i < 1<<12; i++ {
			cfg.IsMoELayer(i)
		}
		out, err := cfg.Marshal()
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		if _, err := ParseConfig(out); err != nil {
			t.Fatalf("ParseConfig(Marshal(cfg)) = %v\n%s", err, out)
		}
	})
}
