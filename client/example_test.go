package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/moemesh/moemesh/client"
	pb "github.com/moemesh/moemesh/proto/moemesh/inference/v1"
)

// Streaming a completion piece by piece.
func ExampleClient_Generate() {
	addr, stop, err := serve(&fakeServer{}) // an in-process stand-in for a coordinator
	if err != nil {
		log.Fatal(err)
	}
	defer stop()

	c, err := client.Dial([]string{addr}, client.WithInsecure())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	st, err := c.Generate(ctx, &pb.GenerateRequest{
		PromptTokenIds: []int32{1, 2, 3},
		MaxTokens:      4,
		Sampling:       &pb.SamplingParams{Seed: proto.Uint64(7)},
	})
	if err != nil {
		log.Fatal(err)
	}
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			log.Fatal(status.Code(err), err)
		}
		fmt.Printf("%v %q", m.TokenIds, m.Text)
		if m.FinishReason != "" {
			fmt.Print(" ", m.FinishReason)
		}
		fmt.Println()
	}
	// Output:
	// [369] "t369 "
	// [169] "t169 "
	// [105] "t105 "
	// [723] "t723 " length
}

// A stream cut by a coordinator failover: the first coordinator loses its
// leadership after three tokens, the SDK resumes on the second, and the
// caller reads one uninterrupted completion.
func ExampleGenerateStream_Collect_failover() {
	old, stopOld, err := serve(&fakeServer{cutAfter: 3})
	if err != nil {
		log.Fatal(err)
	}
	defer stopOld()
	leader, stopLeader, err := serve(&fakeServer{})
	if err != nil {
		log.Fatal(err)
	}
	defer stopLeader()

	c, err := client.Dial([]string{old, leader}, client.WithInsecure())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	st, err := c.Generate(ctx, &pb.GenerateRequest{
		PromptTokenIds: []int32{1, 2, 3},
		MaxTokens:      6,
		Sampling:       &pb.SamplingParams{Seed: proto.Uint64(7)},
	})
	if err != nil {
		log.Fatal(err)
	}
	res, err := st.Collect()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.TokenIDs, res.FinishReason, res.Usage.GetCompletionTokens())
	fmt.Printf("%q\n", res.Text)
	fmt.Println("attempts:", st.Attempts())
	// Output:
	// [369 169 105 723 567 892] length 6
	// "t369 t169 t105 t723 t567 t892 "
	// attempts: 2
}

// A request the server rejects is not retried: its status comes back.
func ExampleClient_Tokenize_error() {
	addr, stop, err := serve(&fakeServer{code: codes.InvalidArgument})
	if err != nil {
		log.Fatal(err)
	}
	defer stop()
	c, err := client.Dial([]string{addr}, client.WithInsecure())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	_, err = c.Tokenize(context.Background(), &pb.TokenizeRequest{Prompt: "hi"})
	fmt.Println(status.Code(err))
	// Output:
	// InvalidArgument
}
