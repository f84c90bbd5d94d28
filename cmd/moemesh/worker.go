package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/moemesh/moemesh/worker"
)

func init() { register(newWorkerCmd) }

type workerOptions struct {
	Listen           string
	Device           string
	ExitOnStdinClose bool
	LogLevel         string
}

func newWorkerCmd(s IOStreams) *cobra.Command {
	o := &workerOptions{}
	cmd := &cobra.Command{
		Use:   "worker --listen ADDR",
		Short: "Run a worker: it loads the shard the coordinator assigns and runs steps with its peers",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.Run(cmd.Context(), s)
		},
	}
	cmd.Flags().StringVar(&o.Listen, "listen", "127.0.0.1:0", "address for the worker and peer gRPC services")
	cmd.Flags().StringVar(&o.Device, "device", "cpu", "compute device: cpu or cuda:N (CUDA needs a -tags cuda build)")
	cmd.Flags().BoolVar(&o.ExitOnStdinClose, "exit-on-stdin-close", false, "exit when standard input closes (used by the local cluster launcher)")
	cmd.Flags().StringVar(&o.LogLevel, "log-level", "warn", "debug, info, warn or error")
	return cmd
}

func (o *workerOptions) Run(ctx context.Context, s IOStreams) error {
	if ctx == nil {
		ctx = context.Background()
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.LogLevel)); err != nil {
		return usagef("--log-level %q: want debug, info, warn or error", o.LogLevel)
	}
	backend, err := parseDevice(o.Device)
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", o.Listen, err)
	}
	log := slog.New(slog.NewTextHandler(s.ErrOut, &slog.HandlerOptions{Level: level}))
	srv := worker.Serve(lis, worker.Config{Backend: backend, Log: log})
	fmt.Fprintf(s.Out, "%s%s\n", listenPrefix, srv.Addr())

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.ExitOnStdinClose {
		go func() {
			_, _ = io.Copy(io.Discard, s.In)
			stop()
		}()
	}
	select {
	case <-ctx.Done():
	case <-srv.Done():
	}
	srv.Stop(5 * time.Second)
	return nil
}
