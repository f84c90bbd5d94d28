package control

import (
	"testing"
	"time"

	"github.com/moemesh/moemesh/coordinator/store"
)

func TestConfigValidate(t *testing.T) {
	good := DefaultConfig()
	good.ID, good.Store = "c0", &store.Store{}
	for _, tc := range []struct {
		name  string
		edit  func(*Config)
		valid bool
	}{
		{"default", func(*Config) {}, true},
		{"no id", func(c *Config) { c.ID = "" }, false},
		{"no store", func(c *Config) { c.Store = nil }, false},
		{"no workers", func(c *Config) { c.Workers = 0 }, false},
		{"tp does not divide", func(c *Config) { c.Workers, c.TP = 3, 2 }, false},
		{"tp divides", func(c *Config) { c.Workers, c.TP = 4, 2 }, true},
		{"no kv", func(c *Config) { c.KVTokens = 0 }, false},
		{"ttl below a second", func(c *Config) { c.LeaseTTL = 500 * time.Millisecond }, false},
		{"no step timeout", func(c *Config) { c.StepTimeout = 0 }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.edit(&c)
			if err := c.Validate(); (err == nil) != tc.valid {
				t.Errorf("Validate: %v, want valid %v", err, tc.valid)
			}
		})
	}
}
