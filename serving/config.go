package serving

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// Config are the front doors' settings.
type Config struct {
	// ModelName is the name clients use for the model (vLLM's
	// --served-model-name); "" means the model directory's base name.
	ModelName string
	// APIKeys are the accepted bearer keys besides those of APIKeyFile and
	// APIKeyEnv; no key at all turns authentication off.
	APIKeys []string
	// APIKeyFile names a file of keys, one a line ("#" starts a comment);
	// "" reads none.
	APIKeyFile string
	// APIKeyEnv names an environment variable holding comma-separated
	// keys (vLLM reads VLLM_API_KEY the same way); "" reads none.
	APIKeyEnv string
	// TLSCertFile and TLSKeyFile, both set, serve gRPC and HTTP over TLS.
	TLSCertFile, TLSKeyFile string
	// MaxBodyBytes bounds an HTTP request body and a gRPC message.
	MaxBodyBytes int64
	// MaxPromptTokens bounds a prompt (0: only the context bounds it).
	MaxPromptTokens int
	// MaxStreamsPerKey bounds the generations running at once per API key
	// (server-wide when there are no keys); 0 means no bound.
	MaxStreamsPerKey int
	// Registry receives the metrics; nil makes a private one (served on
	// /metrics either way).
	Registry *prometheus.Registry
	// Log receives the front doors' logs; nil discards them.
	Log *slog.Logger
}

// DefaultConfig returns the settings a coordinator starts with.
func DefaultConfig() Config {
	return Config{
		// Named after the model directory, as vLLM does.
		ModelName: "",
		// Keys come from the environment like VLLM_API_KEY.
		APIKeyEnv: "MOEMESH_API_KEY",
		// A 32k-token chat with tools is well under 8 MiB of JSON.
		MaxBodyBytes: 8 << 20,
		// The context is the real bound.
		MaxPromptTokens: 0,
		// Unbounded: the scheduler's queue absorbs bursts.
		MaxStreamsPerKey: 0,
	}
}

// validate checks the ranges and reads the keys and the certificate.
func (c *Config) load() (keys []string, cert *tls.Certificate, err error) {
	if c.MaxBodyBytes < 1024 {
		return nil, nil, fmt.Errorf("serving: MaxBodyBytes %d is under 1 KiB; no request would fit", c.MaxBodyBytes)
	}
	if c.MaxPromptTokens < 0 || c.MaxStreamsPerKey < 0 {
		return nil, nil, fmt.Errorf("serving: MaxPromptTokens %d and MaxStreamsPerKey %d must be >= 0 (0: no bound)", c.MaxPromptTokens, c.MaxStreamsPerKey)
	}
	add := func(k string) {
		if k = strings.TrimSpace(k); k != "" {
			keys = append(keys, k)
		}
	}
	for _, k := range c.APIKeys {
		add(k)
	}
	if c.APIKeyFile != "" {
		b, err := os.ReadFile(c.APIKeyFile)
		if err != nil {
			return nil, nil, fmt.Errorf("serving: API key file: %w", err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if i := strings.IndexByte(line, '#'); i >= 0 {
				line = line[:i]
			}
			add(line)
		}
	}
	if c.APIKeyEnv != "" {
		for _, k := range strings.Split(os.Getenv(c.APIKeyEnv), ",") {
			add(k)
		}
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return nil, nil, fmt.Errorf("serving: TLS needs both a certificate file and a key file (got cert %q, key %q)", c.TLSCertFile, c.TLSKeyFile)
	}
	if c.TLSCertFile != "" {
		kp, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
		if err != nil {
			return nil, nil, fmt.Errorf("serving: TLS: %w", err)
		}
		cert = &kp
	}
	return keys, cert, nil
}
