package tokenizer

import "errors"

// Sentinel errors. Functions wrap them with %w and add detail; match them
// with errors.Is.
var (
	// ErrInvalidJSON: tokenizer.json or tokenizer_config.json is not valid
	// JSON or lacks a required field.
	ErrInvalidJSON = errors.New("tokenizer: invalid tokenizer file")
	// ErrUnsupported: the file is well formed but asks for something this
	// package does not implement (a model type other than BPE, a normalizer
	// other than NFC, dropout, ...).
	ErrUnsupported = errors.New("tokenizer: unsupported tokenizer configuration")
	// ErrIDOutOfRange: a token id is negative or names no token.
	ErrIDOutOfRange = errors.New("tokenizer: token id out of range")
	// ErrNoChatTemplate: tokenizer_config.json has no chat_template.
	ErrNoChatTemplate = errors.New("tokenizer: no chat template")
	// ErrTemplate: the chat template failed to compile or render.
	ErrTemplate = errors.New("tokenizer: chat template failed")
)
