package nodetest

import (
	"context"
	"fmt"
	"sync"
)

// CrashGate halts the first handoff of one shard at one crash point on
// one node (Config.Fault), so a test can kill that node there: Arm names
// the shard and the node, Wait returns once the handoff is halted, and
// Release lets the halted goroutine go on (after the kill it belongs to
// a dead process).
type CrashGate struct {
	point   string
	mu      sync.Mutex
	shard   string
	node    string
	hit     chan struct{}
	release chan struct{}
	once    sync.Once
}

// NewCrashGate returns a gate for the crash point named point (one of
// package handoff's Fault* names).
func NewCrashGate(point string) *CrashGate {
	return &CrashGate{point: point, hit: make(chan struct{}), release: make(chan struct{})}
}

// Fault is the gate's Config.Fault.
func (g *CrashGate) Fault(nodeID, point, shardID string) {
	g.mu.Lock()
	match := point == g.point && shardID == g.shard && nodeID == g.node
	g.mu.Unlock()
	if !match {
		return
	}
	first := false
	g.once.Do(func() { first = true })
	if first {
		close(g.hit)
		<-g.release
	}
}

// Arm makes the gate halt shardID's handoff on node nodeID.
func (g *CrashGate) Arm(shardID, nodeID string) {
	g.mu.Lock()
	g.shard, g.node = shardID, nodeID
	g.mu.Unlock()
}

// Wait returns once the handoff is halted at the gate's point, or an
// error when ctx ends first.
func (g *CrashGate) Wait(ctx context.Context) error {
	select {
	case <-g.hit:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("the handoff of %s never reached %s on %s", g.shard, g.point, g.node)
	}
}

// Release lets the halted goroutine go on.
func (g *CrashGate) Release() { close(g.release) }
