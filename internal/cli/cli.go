// Package cli holds the small flag helpers the commands share.
package cli

import (
	"net"
	"os"
	"strings"
)

// SplitList splits a comma-separated flag value, dropping blanks.
func SplitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// HostnameOr returns the host name, or def when it cannot be read.
func HostnameOr(def string) string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return def
}

// IsLoopback reports whether a listen address ("host:port") can be reached
// only from this machine: its host is a loopback IP or "localhost". An
// empty host (":8080") listens on every interface and is not.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
