// Package client is the Go SDK of a moemesh cluster: it dials one or
// several coordinators over TLS (or plaintext, when asked explicitly),
// sends an optional API key, and streams Generate and Chat.
//
// Only the leading coordinator serves; standbys answer UNAVAILABLE. The
// client retries UNAVAILABLE and connection failures with exponential
// backoff and jitter, moving to the next address, within the caller's
// context and RetryPolicy.MaxRetryTime. A stream cut by a coordinator
// failover resumes on the new leader: the SDK resends the request with
// the tokens already received as resume_token_ids and the same seed
// (chosen at random before the first attempt when the caller set none),
// so the caller reads one uninterrupted stream. Other codes
// (INVALID_ARGUMENT, NOT_FOUND, UNAUTHENTICATED, RESOURCE_EXHAUSTED,
// CANCELLED, DEADLINE_EXCEEDED, ...) are returned at once.
//
// The package imports only the public proto
// (github.com/moemesh/moemesh/proto/moemesh/inference/v1), gRPC and the
// standard library. docs/client.md describes the semantics and limits.
//
//	c, err := client.Dial([]string{"coord-0:7000", "coord-1:7000"},
//		client.WithCAFile("ca.pem"), client.WithAPIKey(os.Getenv("MOEMESH_API_KEY")))
//	if err != nil { ... }
//	defer c.Close()
//	st, err := c.Generate(ctx, &inferencev1.GenerateRequest{Prompt: "Hello", MaxTokens: 32})
//	if err != nil { ... }
//	for {
//		m, err := st.Recv()
//		if err == io.EOF { break }
//		if err != nil { ... }
//		fmt.Print(m.Text)
//	}
package client
