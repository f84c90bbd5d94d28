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
	// AdminTokenFile names a file holding the admin API's operator token
	// (its first non-empty line); AdminTokenEnv an environment variable
	// holding it. Without a token the operations that change the cluster
	// are refused.
	AdminTokenFile string
	AdminTokenEnv  string
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
		// The operator's token, kept apart from the API keys.
		AdminTokenEnv: "MOEMESH_ADMIN_TOKEN",
		// A 32k-token chat with tools is well under 8 MiB of JSON.
		MaxBodyBytes: 8 << 20,
		// The context is the real bound.
		MaxPromptTokens: 0,
		// Unbounded: the scheduler's queue absorbs bursts.
		MaxStreamsPerKey: 0,
	}
}

// adminToken reads the admin token ("" when none is configured).
func (c *Config) adminToken() (string, error) {
	if c.AdminTokenFile != "" {
		b, err := os.ReadFile(c.AdminTokenFile)
		if err != nil {
			return "", fmt.Errorf("serving: admin token file: %w", err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
				return t, nil
			}
		}
		return "", fmt.Errorf("serving: admin token file %s holds no token", c.AdminTokenFile)
	}
	if c.AdminTokenEnv != "" {
		return strings.TrimSpace(os.Getenv(c.AdminTokenEnv)), nil
	}
	return "", nil
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
