// Package tokenizer turns text into Qwen3 token ids and back, and renders
// chat prompts.
//
// It implements the byte-level BPE of a Hugging Face tokenizer.json: added
// and special tokens are matched in the raw text first (longest match), the
// rest is NFC-normalized, cut into words by the model's pre-tokenizer regex
// (a hand-written splitter for the Qwen2/Qwen3 pattern, github.com/dlclark/regexp2
// for any other), mapped to GPT-2's byte-level alphabet and merged by rank.
// Decoding turns ids back into bytes and replaces invalid UTF-8 with U+FFFD
// exactly as Hugging Face does; StreamDecoder does the same one id at a time
// without splitting a character.
//
// The chat template of tokenizer_config.json is rendered by a Jinja engine
// (internal/jinja, a fork of github.com/ardanlabs/jinja v1.8.0 that prints
// numbers and strings as Python's jinja2 does), so models other than Qwen3
// work without code changes.
//
// The Qwen3 tokenizer files are embedded (Qwen3, Qwen3Files); Load reads any
// model directory. docs/tokenizer.md gives the design and measurements.
//
// The package does no I/O besides Load and depends on nothing above it.
package tokenizer
