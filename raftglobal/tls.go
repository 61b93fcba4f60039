package raftglobal

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// tlsHandshakeTimeout bounds an incoming connection's TLS handshake: a
// peer that connects and says nothing is dropped after it.
const tlsHandshakeTimeout = 10 * time.Second

// NewTLSTransport is Raft's network transport over TLS: it listens on
// bindAddr, accepting only peers that complete a handshake with server
// (which should require a client certificate of the cluster CA), and
// dials peers with client. advertise is the address other servers reach
// this one at (the listener's own when nil; it must then name an IP).
func NewTLSTransport(bindAddr string, advertise net.Addr, server, client *tls.Config, maxPool int, timeout time.Duration, logger hclog.Logger) (*raft.NetworkTransport, error) {
	if server == nil || client == nil {
		return nil, errors.New("raftglobal: a TLS transport needs a server and a client TLS configuration")
	}
	return newTransport(bindAddr, advertise, server, client, nil, maxPool, timeout, logger)
}

// tlsStreamLayer is a raft.StreamLayer over TLS.
type tlsStreamLayer struct {
	ln             net.Listener
	advertise      net.Addr
	server, client *tls.Config
}

// Accept returns the next connection; its handshake runs on its first
// read or write (in the transport's goroutine for that connection, not in
// the accept loop), bounded by tlsHandshakeTimeout.
func (s *tlsStreamLayer) Accept() (net.Conn, error) {
	c, err := s.ln.Accept()
	if err != nil {
		return nil, err
	}
	return &serverConn{Conn: tls.Server(c, s.server)}, nil
}

func (s *tlsStreamLayer) Close() error { return s.ln.Close() }

func (s *tlsStreamLayer) Addr() net.Addr {
	if s.advertise != nil {
		return s.advertise
	}
	return s.ln.Addr()
}

// Dial connects to a peer and completes the handshake within timeout.
func (s *tlsStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	d := &tls.Dialer{NetDialer: &net.Dialer{}, Config: s.client}
	return d.DialContext(ctx, "tcp", string(address))
}

// serverConn is an accepted TLS connection whose handshake has a deadline.
type serverConn struct {
	*tls.Conn
	once sync.Once
	err  error
}

func (c *serverConn) handshake() error {
	c.once.Do(func() {
		c.Conn.SetDeadline(time.Now().Add(tlsHandshakeTimeout))
		c.err = c.Conn.Handshake()
		c.Conn.SetDeadline(time.Time{})
	})
	return c.err
}

func (c *serverConn) Read(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

func (c *serverConn) Write(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}
