// Command moemeshctl operates a moemesh cluster through the admin API of
// its coordinators (moemesh.admin.v1): cluster status, the expert
// placement and its load statistics, live rebalancing, draining and
// uncordoning workers. docs/moemeshctl.md describes every command, its
// output and its exit codes (exitcodes.go).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], defaultStreams(), os.Getenv)
	stop()
	os.Exit(code)
}
