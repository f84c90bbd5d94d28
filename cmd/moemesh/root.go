package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// IOStreams are the streams a command reads and writes; tests inject buffers.
type IOStreams struct {
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer
	// ErrIsTerminal reports whether ErrOut is a terminal (progress bars).
	ErrIsTerminal bool
}

func defaultStreams() IOStreams {
	fi, err := os.Stderr.Stat()
	tty := err == nil && fi.Mode()&os.ModeCharDevice != 0
	return IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr, ErrIsTerminal: tty}
}

// newRootCmd builds the command tree. Each subcommand lives in its own file
// as new<Name>Cmd(IOStreams) *cobra.Command.
func newRootCmd(s IOStreams) *cobra.Command {
	root := &cobra.Command{
		Use:           "moemesh",
		Short:         "Serve Qwen3 Mixture-of-Experts models across many workers",
		Long:          "Serve Qwen3 Mixture-of-Experts models across many workers.\n\n" + flagSourcesHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
		// Fill the flags not given on the command line from the
		// environment and the config file (flagsources.go).
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error { return applyFlagSources(cmd) },
	}
	root.PersistentFlags().String(configFlag, "", "YAML file of flag values (flag name: value); also $MOEMESH_CONFIG")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	root.SetIn(s.In)
	root.SetOut(s.Out)
	root.SetErr(s.ErrOut)
	for _, c := range subcommands {
		root.AddCommand(c(s))
	}
	return root
}

// A subcommand's own PersistentPreRunE must not hide the root's.
func init() { cobra.EnableTraverseRunHooks = true }

// subcommands is filled by init functions of the files that define them.
var subcommands []func(IOStreams) *cobra.Command

func register(f func(IOStreams) *cobra.Command) { subcommands = append(subcommands, f) }

// run executes the CLI and returns the process exit code.
func run(args []string, s IOStreams) int {
	root := newRootCmd(s)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(s.ErrOut, "moemesh:", err)
		return exitCode(err)
	}
	return ExitOK
}

func exitCode(err error) int {
	var ue *usageError
	if errors.As(err, &ue) {
		return ExitUsage
	}
	return ExitFailure
}

// usageError marks an error caused by bad flags or input.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error { return &usageError{fmt.Errorf(format, a...)} }

// noArgs rejects positional arguments as a usage error: every command
// takes flags, and tokenize and template read their input from stdin.
func noArgs(_ *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q (commands take flags; input is read from stdin)", args[0])
	}
	return nil
}
