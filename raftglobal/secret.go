package raftglobal

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/lunora/lunora/clustersecret"
)

// secretTimeout bounds how long an accepted Raft connection may take to
// present the cluster token: a peer that connects and says nothing is
// dropped after it.
const secretTimeout = 10 * time.Second

// newTransport is Raft's network transport on bindAddr: over TLS when
// server and client are set (see NewTLSTransport), plain TCP otherwise;
// with secret, every connection starts with the cluster token (the dialer
// sends it, the acceptor drops a connection that does not).
func newTransport(bindAddr string, advertise net.Addr, server, client *tls.Config, secret *clustersecret.Secret, maxPool int, timeout time.Duration, logger hclog.Logger) (*raft.NetworkTransport, error) {
	if (server == nil) != (client == nil) {
		return nil, errors.New("raftglobal: a TLS transport needs a server and a client TLS configuration")
	}
	ln, err := net.Listen("tcp", bindAddr)
	if err != nil {
		return nil, err
	}
	var sl raft.StreamLayer
	if server != nil {
		sl = &tlsStreamLayer{ln: ln, advertise: advertise, server: server, client: client}
	} else {
		sl = &tcpStreamLayer{ln: ln, advertise: advertise}
	}
	if a, ok := sl.Addr().(*net.TCPAddr); !ok || a.IP == nil || a.IP.IsUnspecified() {
		ln.Close()
		return nil, errors.New("raftglobal: the Raft address to advertise must name an IP (set AdvertiseAddr)")
	}
	if secret != nil {
		sl = &secretStreamLayer{StreamLayer: sl, secret: secret}
	}
	return raft.NewNetworkTransportWithLogger(sl, maxPool, timeout, logger), nil
}

// tcpStreamLayer is a plain TCP raft.StreamLayer.
type tcpStreamLayer struct {
	ln        net.Listener
	advertise net.Addr
}

func (s *tcpStreamLayer) Accept() (net.Conn, error) { return s.ln.Accept() }
func (s *tcpStreamLayer) Close() error              { return s.ln.Close() }

func (s *tcpStreamLayer) Addr() net.Addr {
	if s.advertise != nil {
		return s.advertise
	}
	return s.ln.Addr()
}

func (s *tcpStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", string(address), timeout)
}

// secretStreamLayer adds the cluster token to a stream layer's
// connections.
type secretStreamLayer struct {
	raft.StreamLayer
	secret *clustersecret.Secret
}

// Dial connects and sends the token first.
func (s *secretStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := s.StreamLayer.Dial(address, timeout)
	if err != nil {
		return nil, err
	}
	c.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := c.Write(s.secret.Raw()); err != nil {
		c.Close()
		return nil, err
	}
	c.SetWriteDeadline(time.Time{})
	return c, nil
}

// Accept returns the next connection; its token is read and checked on
// its first read or write (in the transport's goroutine for that
// connection, not in the accept loop).
func (s *secretStreamLayer) Accept() (net.Conn, error) {
	c, err := s.StreamLayer.Accept()
	if err != nil {
		return nil, err
	}
	return &secretConn{Conn: c, secret: s.secret}, nil
}

// secretConn is an accepted connection that must start with the token.
type secretConn struct {
	net.Conn
	secret *clustersecret.Secret
	once   sync.Once
	err    error
}

// errBadToken closes a Raft connection without the cluster token.
var errBadToken = errors.New("raftglobal: a Raft connection without the cluster secret was refused")

func (c *secretConn) check() error {
	c.once.Do(func() {
		want := len(c.secret.Raw())
		got := make([]byte, want)
		c.Conn.SetReadDeadline(time.Now().Add(secretTimeout))
		_, err := io.ReadFull(c.Conn, got)
		c.Conn.SetReadDeadline(time.Time{})
		switch {
		case err != nil:
			c.err = fmt.Errorf("%w (from %s): %v", errBadToken, c.Conn.RemoteAddr(), err)
		case !c.secret.CheckRaw(got):
			c.err = fmt.Errorf("%w (from %s)", errBadToken, c.Conn.RemoteAddr())
		}
		if c.err != nil {
			c.Conn.Close()
		}
	})
	return c.err
}

func (c *secretConn) Read(b []byte) (int, error) {
	if err := c.check(); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

func (c *secretConn) Write(b []byte) (int, error) {
	if err := c.check(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}
