package server

import (
	"net"
	"syscall"
	"time"
)

// tcpUserTimeout is TCP_USER_TIMEOUT of linux/tcp.h (the same on every
// architecture; not in package syscall for all of them).
const tcpUserTimeout = 0x12

// setUserTimeout bounds how long data sent on c may stay unacknowledged
// before the kernel drops the connection. gRPC sets it on the connections
// it accepts to its keepalive timeout, but only on a *net.TCPConn, which a
// counted connection no longer is; so it is set here, before wrapping.
func setUserTimeout(c net.Conn, d time.Duration) {
	tc, ok := c.(*net.TCPConn)
	if !ok || d <= 0 {
		return
	}
	if raw, err := tc.SyscallConn(); err == nil {
		raw.Control(func(fd uintptr) {
			syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpUserTimeout, int(d/time.Millisecond))
		})
	}
}
