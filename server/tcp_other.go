//go:build !linux

package server

import (
	"net"
	"time"
)

// setUserTimeout does nothing where TCP_USER_TIMEOUT is not known (gRPC
// sets it only on Linux too).
func setUserTimeout(net.Conn, time.Duration) {}
