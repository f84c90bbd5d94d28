package tokenizer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/moemesh/moemesh/internal/jinja"
)

// File names Load reads from a model directory.
const (
	TokenizerFile = "tokenizer.json"
	ConfigFile    = "tokenizer_config.json"
)

// Load reads TokenizerFile and ConfigFile from dir. ConfigFile may be
// absent; the tokenizer then has no chat template and EOSIDs falls back to
// <|endoftext|> where the vocabulary has it.
func Load(dir string) (*Tokenizer, error) {
	tj, err := os.ReadFile(filepath.Join(dir, TokenizerFile))
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	cj, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	return New(tj, cj)
}

// JSON shapes of the parts of tokenizer.json this package reads.
type fileJSON struct {
	AddedTokens  []addedTokenJSON `json:"added_tokens"`
	Normalizer   *componentJSON   `json:"normalizer"`
	PreTokenizer *componentJSON   `json:"pre_tokenizer"`
	Decoder      *componentJSON   `json:"decoder"`
	Model        *modelJSON       `json:"model"`
}

type addedTokenJSON struct {
	ID         int    `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

// componentJSON covers normalizers, pre-tokenizers and decoders.
type componentJSON struct {
	Type           string           `json:"type"`
	Normalizers    []*componentJSON `json:"normalizers"`
	Pretokenizers  []*componentJSON `json:"pretokenizers"`
	Decoders       []*componentJSON `json:"decoders"`
	Pattern        *patternJSON     `json:"pattern"`
	Behavior       string           `json:"behavior"`
	Invert         bool             `json:"invert"`
	AddPrefixSpace bool             `json:"add_prefix_space"`
	UseRegex       *bool            `json:"use_regex"`
}

type patternJSON struct {
	Regex  *string `json:"Regex"`
	String *string `json:"String"`
}

type modelJSON struct {
	Type                    string          `json:"type"`
	Dropout                 *float64        `json:"dropout"`
	ContinuingSubwordPrefix *string         `json:"continuing_subword_prefix"`
	EndOfWordSuffix         *string         `json:"end_of_word_suffix"`
	ByteFallback            bool            `json:"byte_fallback"`
	Vocab                   map[string]int  `json:"vocab"`
	Merges                  json.RawMessage `json:"merges"`
}

type configFileJSON struct {
	ChatTemplate json.RawMessage `json:"chat_template"`
	EOSToken     json.RawMessage `json:"eos_token"`
	BOSToken     json.RawMessage `json:"bos_token"`
	PadToken     json.RawMessage `json:"pad_token"`
}

// New builds a Tokenizer from the contents of tokenizer.json and
// tokenizer_config.json (configJSON may be nil).
func New(tokenizerJSON, configJSON []byte) (*Tokenizer, error) {
	var f fileJSON
	if err := json.Unmarshal(tokenizerJSON, &f); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalidJSON, TokenizerFile, err)
	}
	if f.Model == nil {
		return nil, fmt.Errorf("%w: %s has no model", ErrInvalidJSON, TokenizerFile)
	}
	if f.Model.Type != "BPE" {
		return nil, fmt.Errorf("%w: model type %q (only BPE)", ErrUnsupported, f.Model.Type)
	}
	t := &Tokenizer{}
	var err error
	if t.nfc, err = parseNormalizer(f.Normalizer); err != nil {
		return nil, err
	}
	if t.split, err = parsePreTokenizer(f.PreTokenizer); err != nil {
		return nil, err
	}
	if err := checkDecoder(f.Decoder); err != nil {
		return nil, err
	}
	if err := t.buildModel(f.Model); err != nil {
		return nil, err
	}
	if err := t.addTokens(f.AddedTokens); err != nil {
		return nil, err
	}
	if err := t.applyConfig(configJSON); err != nil {
		return nil, err
	}
	return t, nil
}

func parseNormalizer(c *componentJSON) (nfc bool, err error) {
	if c == nil {
		return false, nil
	}
	switch c.Type {
	case "NFC":
		return true, nil
	case "Sequence":
		switch len(c.Normalizers) {
		case 0:
			return false, nil
		case 1:
			return parseNormalizer(c.Normalizers[0])
		}
	}
	return false, fmt.Errorf("%w: normalizer %q (only NFC)", ErrUnsupported, c.Type)
}

func parsePreTokenizer(c *componentJSON) (splitter, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: no pre_tokenizer (byte-level BPE needs ByteLevel)", ErrUnsupported)
	}
	switch c.Type {
	case "ByteLevel":
		if c.AddPrefixSpace {
			return nil, fmt.Errorf("%w: ByteLevel add_prefix_space", ErrUnsupported)
		}
		if c.UseRegex == nil || *c.UseRegex {
			return newRegexSplitter(gpt2Pattern)
		}
		return nil, nil
	case "Sequence":
		if len(c.Pretokenizers) == 2 && c.Pretokenizers[0] != nil && c.Pretokenizers[0].Type == "Split" {
			bl, err := parsePreTokenizer(c.Pretokenizers[1])
			if err != nil {
				return nil, err
			}
			if bl != nil || c.Pretokenizers[1].Type != "ByteLevel" {
				return nil, fmt.Errorf("%w: Split must be followed by ByteLevel without regex", ErrUnsupported)
			}
			return parseSplit(c.Pretokenizers[0])
		}
		if len(c.Pretokenizers) == 1 {
			return parsePreTokenizer(c.Pretokenizers[0])
		}
	}
	return nil, fmt.Errorf("%w: pre_tokenizer %q (need Split+ByteLevel or ByteLevel)", ErrUnsupported, c.Type)
}

func parseSplit(c *componentJSON) (splitter, error) {
	if c.Behavior != "Isolated" || c.Invert || c.Pattern == nil || c.Pattern.Regex == nil {
		return nil, fmt.Errorf("%w: Split must use a Regex with Isolated behaviour", ErrUnsupported)
	}
	if *c.Pattern.Regex == qwen2Pattern {
		return qwenSplitter{}, nil
	}
	return newRegexSplitter(*c.Pattern.Regex)
}

func checkDecoder(c *componentJSON) error {
	if c == nil || c.Type == "ByteLevel" {
		return nil
	}
	if c.Type == "Sequence" && len(c.Decoders) == 1 {
		return checkDecoder(c.Decoders[0])
	}
	return fmt.Errorf("%w: decoder %q (only ByteLevel)", ErrUnsupported, c.Type)
}

func (t *Tokenizer) buildModel(m *modelJSON) error {
	if m.Dropout != nil && *m.Dropout != 0 {
		return fmt.Errorf("%w: BPE dropout", ErrUnsupported)
	}
	if m.ByteFallback {
		return fmt.Errorf("%w: BPE byte_fallback", ErrUnsupported)
	}
	if (m.ContinuingSubwordPrefix != nil && *m.ContinuingSubwordPrefix != "") ||
		(m.EndOfWordSuffix != nil && *m.EndOfWordSuffix != "") {
		return fmt.Errorf("%w: BPE subword prefix or suffix", ErrUnsupported)
	}
	if len(m.Vocab) == 0 {
		return fmt.Errorf("%w: empty vocab", ErrInvalidJSON)
	}
	maxID := -1
	for tok, id := range m.Vocab {
		if id < 0 || id > maxVocabID {
			return fmt.Errorf("%w: token %q has id %d outside [0, %d]", ErrInvalidJSON, tok, id, maxVocabID)
		}
		maxID = max(maxID, id)
	}
	t.tokens = make([]string, maxID+1)
	t.known = make([]bool, maxID+1)
	for tok, id := range m.Vocab {
		if t.known[id] {
			return fmt.Errorf("%w: id %d used by %q and %q", ErrInvalidJSON, id, t.tokens[id], tok)
		}
		t.tokens[id], t.known[id] = tok, true
	}
	t.vocab = m.Vocab
	t.model = &bpe{merges: make(map[uint64]mergeInfo), cache: make(map[string][]int32)}
	for b := range 256 {
		id, ok := m.Vocab[string(byteToRune[b])]
		if !ok {
			return fmt.Errorf("%w: vocab lacks the byte-level token for byte %#02x", ErrUnsupported, b)
		}
		t.model.byteID[b] = int32(id)
	}
	pairs, err := parseMerges(m.Merges)
	if err != nil {
		return err
	}
	for rank, p := range pairs {
		a, okA := m.Vocab[p[0]]
		b, okB := m.Vocab[p[1]]
		c, okC := m.Vocab[p[0]+p[1]]
		if !okA || !okB || !okC {
			return fmt.Errorf("%w: merge %d (%q %q) names a token missing from vocab", ErrInvalidJSON, rank, p[0], p[1])
		}
		t.model.merges[pairKey(int32(a), int32(b))] = mergeInfo{rank: int32(rank), id: int32(c)}
	}
	return nil
}

// maxVocabID bounds ids so that a hostile file cannot make New allocate
// unbounded tables.
const maxVocabID = 1 << 24

// parseMerges accepts both merge encodings of tokenizer.json: ["a", "b"]
// pairs (current) and "a b" strings (older files).
func parseMerges(raw json.RawMessage) ([][2]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var pairs [][2]string
	if err := json.Unmarshal(raw, &pairs); err == nil {
		return pairs, nil
	}
	var strs []string
	if err := json.Unmarshal(raw, &strs); err != nil {
		return nil, fmt.Errorf("%w: merges: %v", ErrInvalidJSON, err)
	}
	pairs = make([][2]string, len(strs))
	for i, s := range strs {
		a, b, ok := strings.Cut(s, " ")
		if !ok {
			return nil, fmt.Errorf("%w: merge %d %q is not two tokens", ErrInvalidJSON, i, s)
		}
		pairs[i] = [2]string{a, b}
	}
	return pairs, nil
}

func (t *Tokenizer) addTokens(added []addedTokenJSON) error {
	for _, a := range added {
		if a.ID < 0 || a.ID > maxVocabID {
			return fmt.Errorf("%w: added token %q has id %d", ErrInvalidJSON, a.Content, a.ID)
		}
		if a.Content == "" {
			return fmt.Errorf("%w: added token %d is empty", ErrInvalidJSON, a.ID)
		}
		for a.ID >= len(t.tokens) {
			t.tokens = append(t.tokens, "")
			t.known = append(t.known, false)
		}
		if t.known[a.ID] && t.tokens[a.ID] != a.Content {
			// Hugging Face lets an added token shadow a vocab entry's text
			// only when they are the same token.
			return fmt.Errorf("%w: added token %q reuses id %d of %q", ErrInvalidJSON, a.Content, a.ID, t.tokens[a.ID])
		}
		t.tokens[a.ID], t.known[a.ID] = a.Content, true
		at := addedToken{id: a.ID, content: a.Content, lstrip: a.LStrip, rstrip: a.RStrip, singleWord: a.SingleWord, special: a.Special}
		if a.Normalized && !a.Special {
			t.normAdded.add(at)
		} else {
			t.rawAdded.add(at)
		}
		t.added = append(t.added, at)
	}
	t.rawAdded.finish()
	t.normAdded.finish()
	t.tokenBytes = make([][]byte, len(t.tokens))
	for id, tok := range t.tokens {
		if t.known[id] {
			t.tokenBytes[id] = byteLevelDecode(tok)
		}
	}
	t.addedIDs = make(map[string]int, len(t.added))
	for _, a := range t.added {
		t.addedIDs[a.content] = a.id
	}
	return nil
}

func (t *Tokenizer) applyConfig(configJSON []byte) error {
	var c configFileJSON
	if len(bytes.TrimSpace(configJSON)) > 0 {
		if err := json.Unmarshal(configJSON, &c); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrInvalidJSON, ConfigFile, err)
		}
	}
	var err error
	if t.eosToken, err = tokenString(c.EOSToken, "eos_token"); err != nil {
		return err
	}
	if t.bosToken, err = tokenString(c.BOSToken, "bos_token"); err != nil {
		return err
	}
	if t.padToken, err = tokenString(c.PadToken, "pad_token"); err != nil {
		return err
	}
	for _, s := range []string{t.eosToken, endOfText} {
		if id, ok := t.TokenID(s); ok && s != "" && !containsInt(t.eosIDs, id) {
			t.eosIDs = append(t.eosIDs, id)
		}
	}
	src, err := chatTemplateSource(c.ChatTemplate)
	if err != nil {
		return err
	}
	if src != "" {
		tmpl, err := jinja.Compile(src)
		if err != nil {
			return fmt.Errorf("%w: compile: %v", ErrTemplate, err)
		}
		t.template = tmpl
	}
	return nil
}

// endOfText is the end-of-document token Qwen models also stop on (their
// generation_config.json lists it beside eos_token).
const endOfText = "<|endoftext|>"

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// tokenString reads a special-token field: a string, an AddedToken object
// with "content", or null.
func tokenString(raw json.RawMessage, field string) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var obj struct {
		Content string `json:"content"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return "", fmt.Errorf("%w: %s: %s: %v", ErrInvalidJSON, ConfigFile, field, err)
	}
	return obj.Content, nil
}

// chatTemplateSource reads chat_template: a string, or a list of
// {name, template} where the one named "default" is used.
func chatTemplateSource(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var named []struct {
		Name     string `json:"name"`
		Template string `json:"template"`
	}
	if err := json.Unmarshal(raw, &named); err != nil {
		return "", fmt.Errorf("%w: %s: chat_template: %v", ErrInvalidJSON, ConfigFile, err)
	}
	sort.SliceStable(named, func(i, j int) bool { return named[i].Name == "default" && named[j].Name != "default" })
	if len(named) == 0 {
		return "", nil
	}
	return named[0].Template, nil
}
