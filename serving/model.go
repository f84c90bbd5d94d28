package serving

import (
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/moemesh/moemesh/sampling"
	"github.com/moemesh/moemesh/tokenizer"
)

// ModelSource tells the front doors what is served: the control plane's
// Coordinator in production.
type ModelSource interface {
	// ModelDir is the served checkpoint (for its tokenizer and
	// generation_config.json); "" while unknown.
	ModelDir() string
	// ContextTokens is the KV cache of one sequence, in tokens.
	ContextTokens() int
}

// loadTokenizer loads a model directory's tokenizer (a seam for tests,
// which share one).
var loadTokenizer = tokenizer.Load

// served is the model as one request sees it.
type served struct {
	name      string
	tok       *tokenizer.Tokenizer
	gc        sampling.GenerationConfig
	ctxTokens int
	created   int64
}

// models loads the served model's tokenizer and generation config once
// per directory.
type models struct {
	src  ModelSource
	name string
	// onLoad is told the name of a newly loaded model.
	onLoad func(name string)

	mu  sync.Mutex
	dir string
	cur *served
}

// servedName is the served model's name ("" while none is served).
func (m *models) servedName() string {
	s, err := m.get("")
	if err != nil {
		return ""
	}
	return s.name
}

// get returns the served model, checking name ("" matches it).
func (m *models) get(name string) (*served, error) {
	dir := m.src.ModelDir()
	if dir == "" {
		return nil, fmt.Errorf("%w: no model served yet", ErrUnavailable)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cur == nil || m.dir != dir {
		tok, err := loadTokenizer(dir)
		if err != nil {
			return nil, fmt.Errorf("%w: the model's tokenizer: %v", ErrUnavailable, err)
		}
		gc, err := sampling.LoadGenerationConfig(dir)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		n := m.name
		if n == "" {
			n = filepath.Base(filepath.Clean(dir))
		}
		m.cur, m.dir = &served{name: n, tok: tok, gc: gc, created: time.Now().Unix()}, dir
		if m.onLoad != nil {
			m.onLoad(n)
		}
	}
	s := *m.cur
	s.ctxTokens = m.src.ContextTokens()
	if name != "" && name != s.name {
		return nil, fmt.Errorf("%w: %q (this cluster serves %q)", ErrUnknownModel, name, s.name)
	}
	return &s, nil
}
