package tokenizer

import (
	"bytes"
	"compress/gzip"
	"embed"
	"fmt"
	"io"
	"sync"
)

// assets holds the Qwen3 tokenizer files, gzip-compressed; see
// assets/qwen3/PROVENANCE.md.
//
//go:embed assets/qwen3/tokenizer.json.gz assets/qwen3/tokenizer_config.json.gz
var assets embed.FS

// Qwen3Files returns the embedded Qwen3 tokenizer.json and
// tokenizer_config.json, decompressed. Each call returns fresh slices.
func Qwen3Files() (tokenizerJSON, tokenizerConfigJSON []byte, err error) {
	if tokenizerJSON, err = gunzipAsset("assets/qwen3/tokenizer.json.gz"); err != nil {
		return nil, nil, err
	}
	if tokenizerConfigJSON, err = gunzipAsset("assets/qwen3/tokenizer_config.json.gz"); err != nil {
		return nil, nil, err
	}
	return tokenizerJSON, tokenizerConfigJSON, nil
}

func gunzipAsset(name string) ([]byte, error) {
	gz, err := assets.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: embedded %s: %w", name, err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return nil, fmt.Errorf("tokenizer: embedded %s: %w", name, err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: embedded %s: %w", name, err)
	}
	return out, nil
}

var qwen3 = sync.OnceValues(func() (*Tokenizer, error) {
	tj, cj, err := Qwen3Files()
	if err != nil {
		return nil, err
	}
	return New(tj, cj)
})

// Qwen3 returns the embedded Qwen3 tokenizer, loaded on first use and shared
// by all callers afterwards.
func Qwen3() (*Tokenizer, error) { return qwen3() }
