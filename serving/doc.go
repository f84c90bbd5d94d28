// Package serving holds the coordinator's front doors: the public gRPC
// inference service (moemesh.inference.v1) with the standard health and
// reflection services, and the HTTP API: OpenAI-compatible /v1 endpoints,
// /health and /metrics (Prometheus, named as vLLM's with the prefix
// "moemesh:").
//
// Both APIs share one path: a request is validated against the served
// model (tokenizer, context, limits) and becomes a scheduler.Request
// given to a scheduler.Submitter; the tokens that come back are turned
// into text (stop strings held back and cut) or, for chats, into
// reasoning, content and tool calls. Errors become gRPC codes and HTTP
// statuses in one place (errors.go). API keys, TLS and the limits are
// settings of Config. docs/serving.md describes every endpoint.
package serving
