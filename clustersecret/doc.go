// Package clustersecret authenticates cluster members with a shared
// secret: the lighter alternative to mutual TLS (package tlsconf) for the
// node API, the Raft transport and a node's backup endpoint.
//
// Every member reads the same secret from a file (at least MinLen bytes).
// What travels is not the secret itself but a token derived from it
// (HMAC-SHA256), checked in constant time: in gRPC metadata on each
// node-API call (Credentials, and the server's interceptors), in an
// "Authorization: Cluster <token>" header on HTTP, and as the first bytes
// of every Raft connection. Without TLS the token crosses the network in
// the clear: the secret keeps out whoever merely reaches a port, not an
// eavesdropper on the cluster's network — mutual TLS does both.
package clustersecret
