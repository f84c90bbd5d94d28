package membership

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	valid := func() Config {
		c := DefaultConfig()
		c.Name = "worker-0"
		return c
	}
	tests := []struct {
		name   string
		mutate func(*Config)
		want   error // nil: valid
	}{
		{"default with a name", func(*Config) {}, nil},
		{"coordinator", func(c *Config) { c.Role = RoleCoordinator }, nil},
		{"fixed ports", func(c *Config) { c.BindPort = 7946; c.AdvertiseAddr = "10.0.0.1"; c.AdvertisePort = 17946 }, nil},
		{"bind any", func(c *Config) { c.BindAddr = "0.0.0.0" }, nil},
		{"small meta", func(c *Config) { c.Meta = map[string]string{"addr": "10.0.0.1:7070"} }, nil},
		{"no reclaim", func(c *Config) { c.DeadNodeReclaimTime = 0 }, nil},
		{"empty name", func(c *Config) { c.Name = "" }, ErrInvalidConfig},
		{"unknown role", func(c *Config) { c.Role = "spare" }, ErrInvalidConfig},
		{"empty role", func(c *Config) { c.Role = "" }, ErrInvalidConfig},
		{"empty bind addr", func(c *Config) { c.BindAddr = "" }, ErrInvalidConfig},
		{"bind hostname", func(c *Config) { c.BindAddr = "localhost" }, ErrInvalidConfig},
		{"negative bind port", func(c *Config) { c.BindPort = -1 }, ErrInvalidConfig},
		{"bind port too high", func(c *Config) { c.BindPort = 65536 }, ErrInvalidConfig},
		{"advertise hostname", func(c *Config) { c.AdvertiseAddr = "node-1" }, ErrInvalidConfig},
		{"advertise port too high", func(c *Config) { c.BindPort = 7946; c.AdvertiseAddr = "10.0.0.1"; c.AdvertisePort = 70000 }, ErrInvalidConfig},
		{"advertise port without addr", func(c *Config) { c.BindPort = 7946; c.AdvertisePort = 7946 }, ErrInvalidConfig},
		{"advertise port with picked bind port", func(c *Config) { c.AdvertiseAddr = "10.0.0.1"; c.AdvertisePort = 7946 }, ErrInvalidConfig},
		{"zero probe interval", func(c *Config) { c.ProbeInterval = 0 }, ErrInvalidConfig},
		{"zero probe timeout", func(c *Config) { c.ProbeTimeout = 0 }, ErrInvalidConfig},
		{"probe timeout = interval", func(c *Config) { c.ProbeTimeout = c.ProbeInterval }, ErrInvalidConfig},
		{"zero suspicion mult", func(c *Config) { c.SuspicionMult = 0 }, ErrInvalidConfig},
		{"zero gossip interval", func(c *Config) { c.GossipInterval = 0 }, ErrInvalidConfig},
		{"zero push/pull interval", func(c *Config) { c.PushPullInterval = 0 }, ErrInvalidConfig},
		{"zero tcp timeout", func(c *Config) { c.TCPTimeout = 0 }, ErrInvalidConfig},
		{"zero retransmit mult", func(c *Config) { c.RetransmitMult = 0 }, ErrInvalidConfig},
		{"negative reclaim time", func(c *Config) { c.DeadNodeReclaimTime = -time.Second }, ErrInvalidConfig},
		{"secret key of 10 bytes", func(c *Config) { c.SecretKey = make([]byte, 10) }, ErrInvalidConfig},
		{"secret key of 32 bytes", func(c *Config) { c.SecretKey = make([]byte, 32) }, nil},
		{"meta over the limit", func(c *Config) { c.Meta = map[string]string{"blob": strings.Repeat("x", MetaMaxSize)} }, ErrMetaTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.mutate(&c)
			err := c.Validate()
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Validate() = %v; want nil", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Validate() = %v; want an error wrapping %v", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "membership: ") {
				t.Errorf("Validate() = %q; want the \"membership: \" prefix", err)
			}
		})
	}
}

// TestMetaLimitBoundary pins the limit: the largest Meta that fits is
// accepted and one byte more is refused, never truncated.
func TestMetaLimitBoundary(t *testing.T) {
	c := DefaultConfig()
	c.Name = "worker-0"
	fits := -1
	for n := range MetaMaxSize {
		c.Meta = map[string]string{"v": strings.Repeat("x", n)}
		if c.Validate() != nil {
			break
		}
		fits = n
	}
	if fits < MetaMaxSize-64 {
		t.Fatalf("largest fitting value is %d bytes; want close to %d", fits, MetaMaxSize)
	}
	c.Meta = map[string]string{"v": strings.Repeat("x", fits)}
	b, err := encodeMeta(c.Role, c.Meta)
	if err != nil {
		t.Fatal(err)
	}
	marked, err := encodeWire(wireMeta{Role: c.Role, Meta: c.Meta, Leaving: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(marked) > MetaMaxSize || len(b) >= len(marked) {
		t.Errorf("encodings are %d bytes and %d with the leave mark; want both within %d", len(b), len(marked), MetaMaxSize)
	}
	c.Meta = map[string]string{"v": strings.Repeat("x", fits+1)}
	if err := c.Validate(); !errors.Is(err, ErrMetaTooLarge) {
		t.Errorf("one byte over: Validate() = %v; want ErrMetaTooLarge", err)
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	if _, err := New(Config{}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("New(Config{}) = %v; want ErrInvalidConfig", err)
	}
}
