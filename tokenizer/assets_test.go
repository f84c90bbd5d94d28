package tokenizer

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"
)

func TestQwen3FilesChecksum(t *testing.T) {
	tj, cj, err := Qwen3Files()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"tokenizer.json", tj, "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"},
		{"tokenizer_config.json", cj, "5a7303fcb1a27ede63134a2cbd61d5282c247ca6d769ce4746d4ffa124aedd63"},
	} {
		sum := sha256.Sum256(tc.data)
		if got := hex.EncodeToString(sum[:]); got != tc.want {
			t.Errorf("%s: sha256 %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestQwen3Cached(t *testing.T) {
	a, err := Qwen3()
	if err != nil {
		t.Fatal(err)
	}
	b, err := Qwen3()
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Error("Qwen3 returned different tokenizers on two calls")
	}
}
