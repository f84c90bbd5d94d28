package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/moemesh/moemesh/client"
)

// IOStreams are the streams a command reads and writes; tests inject buffers.
type IOStreams struct {
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer
}

func defaultStreams() IOStreams {
	return IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
}

// Environment variables read for flags not given.
const (
	envEndpoints = "MOEMESH_ENDPOINTS"
	envToken     = "MOEMESH_ADMIN_TOKEN"
)

var (
	// errNoToken: an operation that needs the admin token was asked for
	// without one; nothing was sent.
	errNoToken = errors.New("moemeshctl: this operation needs the admin token (--token, --token-file or $" + envToken + ")")
	// errDeclined: the operator did not answer y at the prompt.
	errDeclined = errors.New("moemeshctl: declined; nothing was changed")
)

// globalOptions are the flags every command shares, completed once by the
// root's PersistentPreRunE.
type globalOptions struct {
	Endpoints   []string
	Token       string
	TokenFile   string
	CACert      string
	TLS         bool
	Timeout     time.Duration
	WaitTimeout time.Duration
	Output      string

	streams IOStreams
	getenv  func(string) string
	ctx     context.Context
	format  format
}

func (g *globalOptions) AddFlags(cmd *cobra.Command) {
	f := cmd.PersistentFlags()
	f.StringSliceVar(&g.Endpoints, "endpoints", []string{"127.0.0.1:50051"}, "coordinator gRPC addresses, comma-separated, tried in order; also $"+envEndpoints)
	f.StringVar(&g.Token, "token", "", "admin token (or an API key, for the read commands); default $"+envToken)
	f.StringVar(&g.TokenFile, "token-file", "", "file holding the token (keeps it out of the process list)")
	f.StringVar(&g.CACert, "cacert", "", "PEM CA certificates to verify the coordinators with (implies TLS)")
	f.BoolVar(&g.TLS, "tls", false, "use TLS, verifying the coordinators with the system's roots")
	f.DurationVar(&g.Timeout, "timeout", 10*time.Second, "deadline of each request, over every endpoint tried")
	f.DurationVar(&g.WaitTimeout, "wait-timeout", 10*time.Minute, "deadline of a rebalance or drain, from its start to its last phase")
	f.StringVarP(&g.Output, "output", "o", string(formatTable), "output format: "+formatList())
}

// Complete fills what the command line left out from the environment.
func (g *globalOptions) Complete(cmd *cobra.Command) error {
	flags := cmd.Flags()
	if !flags.Changed("endpoints") {
		if v := g.getenv(envEndpoints); v != "" {
			g.Endpoints = strings.Split(v, ",")
		}
	}
	var eps []string
	for _, e := range g.Endpoints {
		if e = strings.TrimSpace(e); e != "" {
			eps = append(eps, e)
		}
	}
	g.Endpoints = eps
	if g.TokenFile != "" {
		if flags.Changed("token") {
			return usagef("--token and --token-file are exclusive")
		}
		b, err := os.ReadFile(g.TokenFile)
		if err != nil {
			return usagef("--token-file: %v", err)
		}
		g.Token = strings.TrimSpace(string(b))
		if g.Token == "" {
			return usagef("--token-file %s is empty", g.TokenFile)
		}
	} else if !flags.Changed("token") {
		g.Token = strings.TrimSpace(g.getenv(envToken))
	}
	f, err := parseFormat(g.Output)
	if err != nil {
		return err
	}
	g.format = f
	return nil
}

func (g *globalOptions) Validate() error {
	if len(g.Endpoints) == 0 {
		return usagef("--endpoints: no coordinator address")
	}
	if g.Timeout <= 0 {
		return usagef("--timeout %v must be positive", g.Timeout)
	}
	if g.WaitTimeout <= 0 {
		return usagef("--wait-timeout %v must be positive", g.WaitTimeout)
	}
	return nil
}

// requireToken is the check of every operation that changes the cluster.
func (g *globalOptions) requireToken() error {
	if g.Token == "" {
		return errNoToken
	}
	return nil
}

// dial returns an admin client for the endpoints. Without --cacert or
// --tls it speaks plaintext, as the coordinator does without --tls-cert.
func (g *globalOptions) dial() (*client.AdminClient, error) {
	opts := []client.Option{client.WithCallTimeout(g.Timeout)}
	plaintext := false
	switch {
	case g.CACert != "":
		opts = append(opts, client.WithCAFile(g.CACert))
	case g.TLS:
	default:
		plaintext = true
		opts = append(opts, client.WithInsecure())
	}
	if g.Token != "" {
		opts = append(opts, client.WithAPIKey(g.Token))
		if plaintext {
			for _, e := range g.Endpoints {
				if !loopback(e) {
					fmt.Fprintf(g.streams.ErrOut, "moemeshctl: warning: sending the token in plaintext to %s (use --cacert or --tls)\n", e)
				}
			}
		}
	}
	c, err := client.DialAdmin(g.Endpoints, opts...)
	if err != nil {
		return nil, usagef("%v", err)
	}
	return c, nil
}

// loopback reports whether an endpoint is on this machine.
func loopback(endpoint string) bool {
	host, _, err := net.SplitHostPort(endpoint)
	if err != nil {
		host = endpoint
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// call gives a request its --timeout.
func (g *globalOptions) call() (context.Context, context.CancelFunc) {
	return context.WithTimeout(g.ctx, g.Timeout)
}

// newRootCmd builds the command tree. Each subcommand lives in its own
// file as new<Name>Cmd(*globalOptions) *cobra.Command.
func newRootCmd(ctx context.Context, s IOStreams, getenv func(string) string) *cobra.Command {
	g := &globalOptions{streams: s, getenv: getenv, ctx: ctx}
	root := &cobra.Command{
		Use:   "moemeshctl",
		Short: "Operate a moemesh cluster: status, expert placement and load, rebalance, drain",
		Long: "Operate a moemesh cluster through its coordinators' admin API: status, expert\n" +
			"placement and load statistics, live rebalancing, draining. Exit codes:\n" +
			"docs/moemeshctl.md.",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := g.Complete(cmd); err != nil {
				return err
			}
			return g.Validate()
		},
	}
	asGroup(root)
	g.AddFlags(root)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	root.SetIn(s.In)
	root.SetOut(s.Out)
	root.SetErr(s.ErrOut)
	root.AddCommand(newStatusCmd(g), newPlacementCmd(g), newExpertsCmd(g), newRebalanceCmd(g),
		newDrainCmd(g), newUncordonCmd(g))
	return root
}

// run executes the CLI and returns the process exit code.
func run(ctx context.Context, args []string, s IOStreams, getenv func(string) string) int {
	root := newRootCmd(ctx, s, getenv)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(s.ErrOut, "moemeshctl:", strings.TrimPrefix(err.Error(), "moemeshctl: "))
		return exitCode(err)
	}
	return ExitOK
}

// usageError marks an error caused by bad flags or arguments.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error { return &usageError{fmt.Errorf(format, a...)} }

// noArgs rejects positional arguments as a usage error.
func noArgs(_ *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	return nil
}

// asGroup makes a command of subcommands print its help when called
// alone and reject an unknown subcommand as a usage error.
func asGroup(cmd *cobra.Command) *cobra.Command {
	cmd.Args = func(c *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usagef("unknown command %q for %q (see %s --help)", args[0], c.CommandPath(), c.CommandPath())
		}
		return nil
	}
	cmd.RunE = func(c *cobra.Command, _ []string) error { return c.Help() }
	return cmd
}

// oneWorker takes exactly the WORKER argument.
func oneWorker(_ *cobra.Command, args []string) error {
	if len(args) != 1 || strings.TrimSpace(args[0]) == "" {
		return usagef("want one WORKER argument (a worker id from `moemeshctl status`), got %d", len(args))
	}
	return nil
}

// rpcError names the request that failed and reads its status plainly;
// it unwraps to the RPC's error, so exitCode sees its code.
type rpcError struct {
	op  string
	err error
}

func rpcErr(op string, err error) error {
	if err == nil {
		return nil
	}
	return &rpcError{op: op, err: err}
}

func (e *rpcError) Unwrap() error { return e.err }

func (e *rpcError) Error() string {
	s, ok := status.FromError(e.err)
	if !ok {
		return e.op + ": " + e.err.Error()
	}
	hint := map[codes.Code]string{
		codes.Unauthenticated:  " (give the admin token: --token, --token-file or $" + envToken + ")",
		codes.PermissionDenied: " (this needs the admin token; an API key may only read)",
		codes.Unimplemented:    " (this coordinator has no admin API)",
	}[s.Code()]
	return fmt.Sprintf("%s: %v: %s%s", e.op, s.Code(), s.Message(), hint)
}

// wait gives an operation stream its --wait-timeout.
func (g *globalOptions) wait() (context.Context, context.CancelFunc) {
	return context.WithTimeout(g.ctx, g.WaitTimeout)
}
