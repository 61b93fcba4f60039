package server

import (
	"log/slog"
	"net"
	"syscall"
	"testing"
	"time"
)

// TestGRPCConnectionsKeepTheirTCPUserTimeout: a counted connection is not
// a *net.TCPConn, on which alone gRPC sets its keepalive timeout as the
// TCP user timeout; the listener wrapper sets it instead.
func TestGRPCConnectionsKeepTheirTCPUserTimeout(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := newConnLimiter(Config{MaxConnsPerIP: 4, MaxConns: 4}, nil, slog.New(slog.DiscardHandler)).wrap(raw, "grpc", 7*time.Second)
	defer ln.Close()
	client, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := c.(*limitedConn).Conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got int
	var gerr error
	sc.Control(func(fd uintptr) { got, gerr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpUserTimeout) })
	if gerr != nil || got != 7000 {
		t.Fatalf("TCP_USER_TIMEOUT = %d ms (%v), want 7000", got, gerr)
	}
}
