package syncio

import (
	"strings"
	"sync"
	"testing"
)

func TestBufferConcurrentAndLimited(t *testing.T) {
	for _, tc := range []struct {
		name  string
		limit int
		want  int
	}{{"unlimited", 0, 800}, {"limited", 100, 100}} {
		t.Run(tc.name, func(t *testing.T) {
			b := &Buffer{Limit: tc.limit}
			var wg sync.WaitGroup
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range 10 {
						if n, err := b.Write([]byte("0123456789")); n != 10 || err != nil {
							t.Errorf("Write: %d, %v", n, err)
						}
						_ = b.String()
					}
				}()
			}
			wg.Wait()
			if got := len(b.String()); got != tc.want {
				t.Errorf("kept %d bytes, want %d", got, tc.want)
			}
		})
	}
}

func TestWriter(t *testing.T) {
	var sb strings.Builder
	w := &Writer{W: &sb}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() { defer wg.Done(); w.Write([]byte("ab")) }()
	}
	wg.Wait()
	if sb.String() != "abababab" {
		t.Errorf("got %q", sb.String())
	}
}
