package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/moemesh/moemesh/tokenizer"
)

func init() { register(newTokenizeCmd) }

// tokenizeOptions holds the flags and state of `moemesh tokenize`.
type tokenizeOptions struct {
	Model  string
	Decode bool
	JSONL  bool

	tok *tokenizer.Tokenizer
	s   IOStreams
}

func newTokenizeCmd(s IOStreams) *cobra.Command {
	o := &tokenizeOptions{s: s}
	cmd := &cobra.Command{
		Use:   "tokenize",
		Short: "Encode text from stdin to token ids, or decode ids to text",
		Long: `Encode stdin to a JSON array of token ids, or with --decode read a JSON
array of ids and write their text. The input is taken byte for byte: a
trailing newline is text to encode. With --jsonl every input line is one
JSON string (or, with --decode, one JSON array) and every output line the
matching result.

Without --model the embedded Qwen3 tokenizer is used; --model names any
directory holding tokenizer.json and tokenizer_config.json.`,
		Example: `  printf 'Hello world' | moemesh tokenize
  echo '[9707, 1879]' | moemesh tokenize --decode
  moemesh tokenize --model ./Qwen3-30B-A3B --jsonl < texts.jsonl`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Complete(); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run()
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Model, "model", "", "model directory with tokenizer.json and tokenizer_config.json (default: embedded Qwen3)")
	f.BoolVar(&o.Decode, "decode", false, "decode JSON ids to text instead of encoding")
	f.BoolVar(&o.JSONL, "jsonl", false, "one JSON value per input line, one result per output line")
	return cmd
}

// Complete loads the tokenizer.
func (o *tokenizeOptions) Complete() error {
	tok, err := loadTokenizer(o.Model)
	if err != nil {
		return err
	}
	o.tok = tok
	return nil
}

// Validate checks the options; every flag combination is meaningful.
func (o *tokenizeOptions) Validate() error { return nil }

// Run converts stdin to stdout.
func (o *tokenizeOptions) Run() error {
	w := bufio.NewWriter(o.s.Out)
	var err error
	switch {
	case o.JSONL:
		err = eachLine(o.s.In, func(n int, line []byte) error { return o.convertLine(w, n, line) })
	case o.Decode:
		err = o.decodeAll(w)
	default:
		err = o.encodeAll(w)
	}
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	return err
}

func (o *tokenizeOptions) encodeAll(w io.Writer) error {
	text, err := io.ReadAll(o.s.In)
	if err != nil {
		return fmt.Errorf("read stdin: %w", err)
	}
	return writeJSONLine(w, o.tok.Encode(string(text)))
}

func (o *tokenizeOptions) decodeAll(w io.Writer) error {
	data, err := io.ReadAll(o.s.In)
	if err != nil {
		return fmt.Errorf("read stdin: %w", err)
	}
	ids, err := o.parseIDs(data)
	if err != nil {
		return usagef("stdin: %v", err)
	}
	_, err = io.WriteString(w, o.tok.Decode(ids))
	return err
}

func (o *tokenizeOptions) convertLine(w io.Writer, n int, line []byte) error {
	if o.Decode {
		ids, err := o.parseIDs(line)
		if err != nil {
			return usagef("line %d: %v", n, err)
		}
		return writeJSONLine(w, o.tok.Decode(ids))
	}
	var text string
	if err := json.Unmarshal(line, &text); err != nil {
		return usagef("line %d: want a JSON string: %v", n, err)
	}
	return writeJSONLine(w, o.tok.Encode(text))
}

func (o *tokenizeOptions) parseIDs(data []byte) ([]int, error) {
	var ids []int
	if err := json.Unmarshal(data, &ids); err != nil {
		return nil, fmt.Errorf("want a JSON array of token ids: %w", err)
	}
	if err := o.tok.CheckIDs(ids); err != nil {
		return nil, err
	}
	return ids, nil
}

// loadTokenizer reads the tokenizer of a model directory, or returns the
// embedded Qwen3 one when dir is empty.
func loadTokenizer(dir string) (*tokenizer.Tokenizer, error) {
	if dir == "" {
		return tokenizer.Qwen3()
	}
	tok, err := tokenizer.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("--model %s: %w", dir, err)
	}
	return tok, nil
}

// maxLine bounds one JSONL input line.
const maxLine = 64 << 20

// eachLine calls fn with every line of r (without its line ending) and its
// 1-based number, stopping at the first error.
func eachLine(r io.Reader, fn func(n int, line []byte) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	n := 0
	for sc.Scan() {
		n++
		if err := fn(n, bytes.TrimSuffix(sc.Bytes(), []byte("\r"))); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return usagef("line %d: longer than %d bytes", n+1, maxLine)
		}
		return fmt.Errorf("read stdin: %w", err)
	}
	return nil
}

// writeJSONLine writes v as one line of JSON, leaving <, > and & unescaped.
func writeJSONLine(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}
