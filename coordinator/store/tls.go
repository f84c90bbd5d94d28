package store

import (
	"crypto/tls"
	"errors"
	"fmt"

	"go.etcd.io/etcd/client/pkg/v3/transport"
)

// ClientTLS builds Config.TLS from the files etcdctl takes (--cacert,
// --cert, --key): caFile verifies the server (empty: the system roots);
// certFile and keyFile, both or neither, are the client certificate an
// etcd with --client-cert-auth requires. The certificate and key are
// reread on every handshake (etcd's transport does), so they can rotate.
func ClientTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("store: an etcd client certificate needs both the certificate and the key file (--etcd-cert and --etcd-key)")
	}
	info := transport.TLSInfo{CertFile: certFile, KeyFile: keyFile, TrustedCAFile: caFile}
	c, err := info.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("store: etcd client TLS (ca %q, cert %q, key %q): %w", caFile, certFile, keyFile, err)
	}
	return c, nil
}
