package main

import (
	"io"
	"strings"
	"testing"
)

// Dev mode is anonymous, so it listens on loopback only.
func TestDevModeListensOnLoopbackOnly(t *testing.T) {
	for _, args := range [][]string{
		{"dev"},
		{"dev", "-http-addr", "127.0.0.1:0", "-grpc-addr", "[::1]:0"},
		{"dev", "-http-addr", "localhost:8080"},
	} {
		if _, err := parseFlags(args, io.Discard); err != nil {
			t.Errorf("%q: %v", args, err)
		}
	}
	for _, args := range [][]string{
		{"dev", "-http-addr", ":8080"},
		{"dev", "-grpc-addr", "0.0.0.0:8081"},
		{"dev", "-http-addr", "10.1.2.3:8080"},
	} {
		_, err := parseFlags(args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "loopback") {
			t.Errorf("%q: %v, want a refusal naming loopback", args, err)
		}
	}
	// serve has no public API: any address.
	if _, err := parseFlags([]string{"serve", "-schema", "x.yaml", "-http-addr", ":7071"}, io.Discard); err != nil {
		t.Errorf("serve on every interface: %v", err)
	}
}
