// Package tlsconf loads a cluster's TLS material from files — a CA, a
// certificate and its key — and keeps it current: a certificate or CA
// replaced on disk is used by the next handshake, without a restart.
package tlsconf
