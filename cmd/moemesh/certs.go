package main

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/moemesh/moemesh/internal/pki"
)

func init() { register(newCertsCmd) }

func newCertsCmd(s IOStreams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Make a cluster CA and per-role certificates for mutual TLS inside the cluster",
		Long: `Make a cluster certificate authority and the certificates its processes
present to each other (ECDSA P-256). The role of a certificate is the URI
SAN spiffe://moemesh/role/<coordinator|worker|client>; workers admit only
coordinators to WorkerService and only workers to PeerService.

Files: a CA directory holds ca.crt and ca.key (0600); a certificate
directory holds ca.crt (the CA to trust), tls.crt and tls.key (0600).
Existing files are never overwritten without --force. See docs/security.md.`,
		Args: noArgs,
	}
	cmd.AddCommand(newCertsInitCmd(s), newCertsIssueCmd(s))
	return cmd
}

// certsInitOptions holds the flags of `moemesh certs init`.
type certsInitOptions struct {
	Out    string
	Name   string
	Expiry string
	Force  bool

	validity time.Duration
	s        IOStreams
}

func newCertsInitCmd(s IOStreams) *cobra.Command {
	o := &certsInitOptions{s: s}
	cmd := &cobra.Command{
		Use:     "init --out DIR",
		Short:   "Make a cluster CA: DIR/ca.crt and DIR/ca.key",
		Example: `  moemesh certs init --out ./pki/ca --expiry 3650d`,
		Args:    noArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run()
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Out, "out", "", "directory to write ca.crt and ca.key into (created 0700)")
	f.StringVar(&o.Name, "name", "moemesh cluster CA", "the CA's common name")
	f.StringVar(&o.Expiry, "expiry", "3650d", "how long the CA is valid (Go duration, or N followed by d for days)")
	f.BoolVar(&o.Force, "force", false, "overwrite existing files")
	return cmd
}

func (o *certsInitOptions) Validate() error {
	if o.Out == "" {
		return usagef("--out is required: the directory for ca.crt and ca.key")
	}
	v, err := parseExpiry(o.Expiry)
	if err != nil {
		return err
	}
	o.validity = v
	return nil
}

func (o *certsInitOptions) Run() error {
	ca, err := pki.NewCA(o.Name, o.validity)
	if err != nil {
		return err
	}
	if err := ca.WriteFiles(o.Out, o.Force); err != nil {
		return certsWriteError(err)
	}
	fmt.Fprintf(o.s.Out, "wrote %s and %s (expires %s)\n", filepath.Join(o.Out, pki.CACertFile), filepath.Join(o.Out, pki.CAKeyFile),
		ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

// certsIssueOptions holds the flags of `moemesh certs issue`.
type certsIssueOptions struct {
	CA     string
	Role   string
	Name   string
	IPs    []string
	DNS    []string
	Out    string
	Expiry string
	Force  bool

	req pki.IssueRequest
	s   IOStreams
}

func newCertsIssueCmd(s IOStreams) *cobra.Command {
	o := &certsIssueOptions{s: s}
	cmd := &cobra.Command{
		Use:   "issue --ca DIR --role worker|coordinator|client --name NAME --out DIR",
		Short: "Issue a certificate of one role signed by the CA in --ca",
		Example: `  moemesh certs issue --ca ./pki/ca --role worker --name worker-0 --ip 10.0.0.5 --dns worker-0.moemesh --out ./pki/worker-0
  moemesh certs issue --ca ./pki/ca --role coordinator --name coord --ip 10.0.0.2 --out ./pki/coordinator
  moemesh certs issue --ca ./pki/ca --role client --name alice --out ./pki/alice`,
		Args: noArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run()
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.CA, "ca", "", "CA directory (ca.crt and ca.key, as written by certs init)")
	f.StringVar(&o.Role, "role", "", "role: worker, coordinator or client")
	f.StringVar(&o.Name, "name", "", "the certificate's common name (a host or process name)")
	f.StringSliceVar(&o.IPs, "ip", nil, "IP address the holder serves on (repeatable)")
	f.StringSliceVar(&o.DNS, "dns", nil, "DNS name the holder serves on (repeatable)")
	f.StringVar(&o.Out, "out", "", "directory to write ca.crt, tls.crt and tls.key into (created 0700)")
	f.StringVar(&o.Expiry, "expiry", "365d", "how long the certificate is valid (Go duration, or N followed by d for days)")
	f.BoolVar(&o.Force, "force", false, "overwrite existing files")
	return cmd
}

func (o *certsIssueOptions) Validate() error {
	switch {
	case o.CA == "":
		return usagef("--ca is required: the directory of certs init")
	case o.Out == "":
		return usagef("--out is required: the directory for the certificate and key")
	case o.Name == "":
		return usagef("--name is required")
	}
	role, err := pki.ParseRole(o.Role)
	if err != nil {
		return usagef("--role %q: use worker, coordinator or client", o.Role)
	}
	v, err := parseExpiry(o.Expiry)
	if err != nil {
		return err
	}
	o.req = pki.IssueRequest{Role: role, Name: o.Name, DNSNames: o.DNS, Validity: v}
	for _, s := range o.IPs {
		ip := net.ParseIP(s)
		if ip == nil {
			return usagef("--ip %q is not an IP address", s)
		}
		o.req.IPs = append(o.req.IPs, ip)
	}
	if role != pki.RoleClient && len(o.IPs)+len(o.DNS) == 0 {
		return usagef("a %s certificate needs at least one --ip or --dns: peers check the address they dial against it", role)
	}
	return nil
}

func (o *certsIssueOptions) Run() error {
	ca, err := pki.LoadCA(o.CA)
	if err != nil {
		return err
	}
	is, err := ca.Issue(o.req)
	if err != nil {
		if errors.Is(err, pki.ErrInvalid) {
			return &usageError{err}
		}
		return err
	}
	if err := is.WriteFiles(o.Out, ca.CertPEM, o.Force); err != nil {
		return certsWriteError(err)
	}
	f := pki.FilesIn(o.Out)
	fmt.Fprintf(o.s.Out, "wrote %s, %s and %s (role %s, expires %s)\n", f.CA, f.Cert, f.Key, o.req.Role,
		is.Cert.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

func certsWriteError(err error) error {
	if errors.Is(err, pki.ErrExists) {
		return &usageError{err}
	}
	return err
}

// parseExpiry reads a validity: a Go duration ("8760h") or whole days
// ("365d").
func parseExpiry(s string) (time.Duration, error) {
	var d time.Duration
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days <= 0 || days > 100*365 {
			return 0, usagef("--expiry %q: use a positive number of days up to 36500, or a Go duration", s)
		}
		d = time.Duration(days) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil || d <= 0 {
			return 0, usagef("--expiry %q: use a positive Go duration (8760h) or days (365d)", s)
		}
	}
	return d, nil
}
