package membership

import (
	"log/slog"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestMetaRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		role Role
		meta map[string]string
	}{
		{"no meta", RoleCoordinator, nil},
		{"one field", RoleWorker, map[string]string{"addr": "10.0.0.1:7070"}},
		{"odd characters", RoleWorker, map[string]string{"k\"\\\n": "ü\x00€", "": ""}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := encodeMeta(tc.role, tc.meta)
			if err != nil {
				t.Fatal(err)
			}
			got, err := decodeMeta(b)
			if err != nil {
				t.Fatal(err)
			}
			want := wireMeta{Role: tc.role, Meta: tc.meta}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeMetaForeign(t *testing.T) {
	for _, b := range [][]byte{[]byte("not json"), {0xff, 0x00}, []byte(`{"r":1}`)} {
		if _, err := decodeMeta(b); err == nil {
			t.Errorf("decodeMeta(%q) = nil error; want an error", b)
		}
	}
	if w, err := decodeMeta(nil); err != nil || w.Role != "" {
		t.Errorf("decodeMeta(nil) = %+v, %v; want the zero value, nil", w, err)
	}
}

// FuzzDecodeMeta feeds decodeMeta what any node on the network may send:
// it must not panic, and what it accepts must survive a round trip.
func FuzzDecodeMeta(f *testing.F) {
	f.Add([]byte(`{"r":"worker","m":{"addr":"10.0.0.1:7070"}}`))
	f.Add([]byte(`{"r":"coordinator","l":true}`))
	f.Add([]byte(`{}`))
	f.Add([]byte{0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		w, err := decodeMeta(b)
		if err != nil {
			return
		}
		b2, err := encodeWire(w)
		if err != nil {
			t.Fatalf("encodeWire(%+v): %v", w, err)
		}
		w2, err := decodeMeta(b2)
		if err != nil {
			t.Fatalf("decodeMeta(encodeWire(%+v)): %v", w, err)
		}
		if diff := cmp.Diff(w, w2); diff != "" {
			t.Errorf("round trip (-first +second):\n%s", diff)
		}
	})
}

func TestParseLogLine(t *testing.T) {
	tests := []struct {
		line      string
		wantLevel slog.Level
		wantMsg   string
	}{
		{"[DEBUG] memberlist: Stream connection from=127.0.0.1:1\n", slog.LevelDebug, "Stream connection from=127.0.0.1:1"},
		{"[INFO] memberlist: Suspect w has failed, no acks received\n", slog.LevelInfo, "Suspect w has failed, no acks received"},
		{"[WARN] memberlist: Refuting a suspect message (from: a)\n", slog.LevelWarn, "Refuting a suspect message (from: a)"},
		{"[ERR] memberlist: Failed fallback TCP ping: io: read/write on closed pipe\n", slog.LevelError, "Failed fallback TCP ping: io: read/write on closed pipe"},
		{"[ERR] Failed to shutdown transport: x", slog.LevelError, "Failed to shutdown transport: x"},
		{"no tag at all\r\n", slog.LevelInfo, "no tag at all"},
		{"", slog.LevelInfo, ""},
	}
	for _, tc := range tests {
		level, msg := parseLogLine([]byte(tc.line))
		if level != tc.wantLevel || msg != tc.wantMsg {
			t.Errorf("parseLogLine(%q) = %v, %q; want %v, %q", tc.line, level, msg, tc.wantLevel, tc.wantMsg)
		}
	}
}

func TestEventKindString(t *testing.T) {
	got := []string{EventJoin.String(), EventLeave.String(), EventDead.String(), EventUpdate.String(), EventKind(9).String()}
	want := []string{"join", "leave", "dead", "update", "EventKind(9)"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("String() (-want +got):\n%s", diff)
	}
}
