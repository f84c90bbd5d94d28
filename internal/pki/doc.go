// Package pki is the cluster's own public-key infrastructure: a cluster CA,
// per-role certificates, and the TLS and gRPC configuration that makes the
// internal protocol (WorkerService, PeerService) mutual TLS with a role
// check per service.
//
// Keys are ECDSA P-256; certificates are X.509 made with crypto/x509. The
// role a certificate carries is a URI SAN of the form
//
//	spiffe://moemesh/role/<role>
//
// (a SPIFFE ID, so standard tooling shows it), one per certificate; the
// Subject is informational only. Roles: coordinator, worker, client
// (operators' tools).
//
// A process reads its files through a Source, which checks the files'
// modification times on every handshake and reloads them when they change,
// so certificates rotate without a restart (new connections use the new
// files; established ones keep theirs). A Source built from a directory
// uses the file names of Files (ca.crt, tls.crt, tls.key).
//
// Authorization is separate from authentication: the TLS configs verify
// that a peer's chain ends at the cluster CA; Authorizer's interceptors
// then check the peer's role against a Policy keyed by full gRPC method
// name prefix, refusing anything not listed.
//
// Imports: the standard library and gRPC only.
package pki
