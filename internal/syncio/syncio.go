// Package syncio holds writers safe for concurrent use: the log collectors
// and shared stderr copiers of the process launchers and their tests.
package syncio

import (
	"bytes"
	"io"
	"sync"
)

// Buffer collects writes from several goroutines, keeping at most Limit
// bytes (the start; 0 means no limit), and can be read at any time.
type Buffer struct {
	Limit int

	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer; past Limit it drops the bytes and reports
// them written, so a chatty process never blocks or fails on its log.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.Limit > 0 && b.buf.Len()+len(p) > b.Limit {
		b.buf.Write(p[:max(0, b.Limit-b.buf.Len())])
		return len(p), nil
	}
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Writer serialises writes to W from several goroutines.
type Writer struct {
	mu sync.Mutex
	W  io.Writer
}

// Write implements io.Writer.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.W.Write(p)
}
