// Package chat holds Qwen3's chat semantics on top of the tokenizer: it
// validates a conversation and renders it into a prompt (Render), with
// enable_thinking and the /think and /no_think soft switches resolved on the
// server so that the token sequence is deterministic; it parses what the
// model generates, token by token, into reasoning, content and tool calls
// (Parser), the way vLLM's qwen3 reasoning parser and hermes tool parser do;
// and it gives the tokens that end a thinking phase when a thinking budget
// runs out (BudgetText, BudgetInsert).
//
// The serving front ends (gRPC Chat, OpenAI-compatible HTTP) use it; it
// imports only the tokenizer and the standard library. docs/chat.md gives
// the semantics and where they differ from vLLM.
package chat
