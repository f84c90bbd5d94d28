package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"

	"strings"

	"github.com/moemesh/moemesh/client"
	infpb "github.com/moemesh/moemesh/proto/moemesh/inference/v1"
)

// runRemote generates through a running cluster's gRPC API, with the SDK
// (retries and failover over the comma-separated addresses).
func (o *generateOptions) runRemote(ctx context.Context, s IOStreams) error {
	opts := []client.Option{}
	switch {
	case o.TLSCA != "":
		opts = append(opts, client.WithCAFile(o.TLSCA))
	case o.TLS:
	default:
		opts = append(opts, client.WithInsecure())
	}
	if o.APIKey != "" {
		opts = append(opts, client.WithAPIKey(o.APIKey))
	}
	conn, err := client.Dial(strings.Split(o.Server, ","), opts...)
	if err != nil {
		return usagef("--server %q: %v", o.Server, err)
	}
	defer conn.Close()
	p := o.Params
	req := &infpb.GenerateRequest{
		Prompt: o.Prompt, ChatTemplate: true, EnableThinking: o.EnableThinking, MaxTokens: uint32(o.MaxTokens),
		Sampling: &infpb.SamplingParams{
			Temperature: &p.Temperature, TopK: ptr(int32(p.TopK)), TopP: &p.TopP, MinP: &p.MinP,
			PresencePenalty: &p.PresencePenalty, FrequencyPenalty: &p.FrequencyPenalty, RepetitionPenalty: &p.RepetitionPenalty, Seed: &p.Seed,
		},
	}
	if o.System != "" {
		return usagef("--system is not supported with --server yet")
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	stream, err := conn.Generate(ctx, req)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(s.Out)
	defer w.Flush()
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("generating on %s: %w", o.Server, err)
		}
		if _, err := w.WriteString(r.Text); err != nil {
			return err
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
	_, err = fmt.Fprintln(w)
	return err
}

func ptr[T any](v T) *T { return &v }
