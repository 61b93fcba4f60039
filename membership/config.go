package membership

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultPort is the gossip port used for a seed or bind address that names
// no port (memberlist's conventional port).
const DefaultPort = 7946

// Default timing: fast failure detection for a LAN or a Kubernetes cluster.
const (
	DefaultProbeInterval    = 500 * time.Millisecond
	DefaultProbeTimeout     = 250 * time.Millisecond
	DefaultSuspicionMult    = 3
	DefaultGossipInterval   = 100 * time.Millisecond
	DefaultPushPullInterval = 5 * time.Second
)

const (
	// streamTimeout bounds a TCP connect and each read/write of a full state
	// exchange (a join, a push/pull, a fallback ping). Kept short so that a
	// seed address nobody answers at cannot stall a join round for long.
	streamTimeout = 2 * time.Second
	// deadReclaimTime is how long a member must have been Dead before its ID
	// may reappear at a different address. A restarted pod usually gets a
	// new IP, so a dead ID is released almost at once.
	deadReclaimTime = time.Millisecond
	// gossipToDead is how long gossip keeps reaching a dead member so that it
	// gets a chance to refute its death.
	gossipToDead = 15 * time.Second
	// metaBroadcastTimeout bounds how long SetMeta waits for its update to
	// go out.
	metaBroadcastTimeout = 5 * time.Second
	// resolveTimeout bounds one DNS lookup of a seed name.
	resolveTimeout = 5 * time.Second
	// Background join back-off.
	joinBackoffMin = 250 * time.Millisecond
	joinBackoffMax = 5 * time.Second
	// rejoinInterval is how often a member that is not alone re-resolves
	// its seeds and joins the addresses of members it does not know.
	rejoinInterval = 30 * time.Second
	// joinIdleCheck is how often the background loop checks whether the
	// member has become alone again.
	joinIdleCheck = time.Second
	// bindAttempts is how often binding port 0 is retried: TCP picks the
	// port and UDP may find it taken.
	bindAttempts = 10
)

// Config configures Start.
type Config struct {
	// BindAddr is the host:port the gossip listeners (TCP and UDP) bind to.
	// The host must be an IP address; an empty host means 0.0.0.0, a missing
	// port means DefaultPort and port 0 picks a free port. Empty means
	// "0.0.0.0:7946".
	BindAddr string
	// AdvertiseAddr is the host:port other members reach this one at. The
	// host must be an IP address; a missing port means the bound port. Empty
	// means the bound address, or a private IP of this host when bound to
	// 0.0.0.0. It is required when binding to "::".
	AdvertiseAddr string
	// Seeds are "host:port" entries to join through. A host that is a DNS
	// name is resolved to all its addresses (a Kubernetes headless Service),
	// each of which is tried; a missing port means DefaultPort. Listing this
	// member's own address is harmless.
	Seeds []string
	// Resolver resolves a seed host name to IP addresses. Default:
	// net.DefaultResolver.LookupHost.
	Resolver func(ctx context.Context, host string) ([]string, error)
	// SecretKey enables gossip encryption when non-nil: 16, 24 or 32 bytes
	// select AES-128, AES-192 or AES-256. Every member must use the same key.
	SecretKey []byte
	// Meta is what this member gossips about itself. ID (unique in the
	// cluster; it is the memberlist node name) and Role are required.
	// GossipAddr is overwritten with the advertised gossip address. Encoded,
	// it must fit MetaMaxSize bytes.
	Meta Meta
	// OnChange is called after a member joins, leaves, dies or changes its
	// meta. It is called from a goroutine of this package that holds none of
	// its locks, so it may call any method of Membership; calls may be
	// coalesced, so it should re-read Members rather than count calls. It is
	// not called once Shutdown has returned, except that a call already
	// running then is not waited for (so OnChange may itself call Shutdown).
	OnChange func()
	// Logger receives this package's log lines and, at debug level,
	// memberlist's own. Nil discards.
	Logger *slog.Logger
	// Registerer, when non-nil, gets the gauge lunora_members{status,role}.
	Registerer prometheus.Registerer

	// ProbeInterval is how often each member probes one other member.
	// Zero means DefaultProbeInterval.
	ProbeInterval time.Duration
	// ProbeTimeout is how long a probe waits for an ack before trying
	// indirect probes. Zero means DefaultProbeTimeout.
	ProbeTimeout time.Duration
	// SuspicionMult scales how long a suspected member has to refute before
	// it is declared Dead: SuspicionMult * max(1, log10(N)) * ProbeInterval
	// once enough other members confirm the suspicion, and up to 6 times
	// that without confirmations. Zero means DefaultSuspicionMult.
	SuspicionMult int
	// GossipInterval is how often queued gossip is sent to a few random
	// members. Zero means DefaultGossipInterval.
	GossipInterval time.Duration
	// PushPullInterval is how often a member syncs its full state with one
	// random member over TCP (anti-entropy; it also lets a restarted member
	// whose first announcement was rejected be seen). Zero means
	// DefaultPushPullInterval.
	PushPullInterval time.Duration

	// rejoinEvery overrides rejoinInterval (for this package's tests).
	rejoinEvery time.Duration
}

func (c *Config) probeInterval() time.Duration {
	return orDefault(c.ProbeInterval, DefaultProbeInterval)
}

func (c *Config) probeTimeout() time.Duration {
	return orDefault(c.ProbeTimeout, DefaultProbeTimeout)
}

func (c *Config) gossipInterval() time.Duration {
	return orDefault(c.GossipInterval, DefaultGossipInterval)
}

func (c *Config) pushPullInterval() time.Duration {
	return orDefault(c.PushPullInterval, DefaultPushPullInterval)
}

func (c *Config) suspicionMult() int {
	if c.SuspicionMult <= 0 {
		return DefaultSuspicionMult
	}
	return c.SuspicionMult
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// ParseKey decodes a gossip key given as standard base64 (for a -gossip-key
// flag or an environment variable) and checks that it is 16, 24 or 32 bytes.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("membership: gossip key is empty")
	}
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("membership: gossip key is not valid standard base64: %w", err)
	}
	if err := checkKey(key); err != nil {
		return nil, err
	}
	return key, nil
}

func checkKey(key []byte) error {
	switch len(key) {
	case 16, 24, 32:
		return nil
	}
	return fmt.Errorf("membership: gossip key must be 16, 24 or 32 bytes (AES-128, AES-192 or AES-256), got %d bytes", len(key))
}

// hostPort is a parsed "host:port" with the port as a string.
type hostPort struct {
	host        string
	port        string
	defaultPort bool // no port was given; port is DefaultPort
}

// splitHostPort parses "host:port", "host", "[v6]:port", "[v6]" or a bare
// IPv6 address; a missing port becomes DefaultPort. The host may be empty
// only when allowEmptyHost is set.
func splitHostPort(s string, allowEmptyHost bool) (hostPort, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return hostPort{}, errors.New("empty address")
	}
	if ip := net.ParseIP(s); ip != nil {
		return hostPort{host: s, port: strconv.Itoa(DefaultPort), defaultPort: true}, nil
	}
	defaulted := false
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		var ae *net.AddrError
		if !errors.As(err, &ae) || ae.Err != "missing port in address" {
			return hostPort{}, fmt.Errorf("address %q: %w", s, err)
		}
		host = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
		port = strconv.Itoa(DefaultPort)
		defaulted = true
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return hostPort{}, fmt.Errorf("address %q: bad port %q", s, port)
	}
	if host == "" && !allowEmptyHost {
		return hostPort{}, fmt.Errorf("address %q: no host", s)
	}
	return hostPort{host: host, port: strconv.FormatUint(n, 10), defaultPort: defaulted}, nil
}
