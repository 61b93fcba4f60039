package handoff

import (
	"context"
	"fmt"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/shardhost"
	"google.golang.org/grpc/codes"
)

type pullCall struct {
	done chan struct{}
	err  error
}

// Pull asks holder (node-API address addr, "" when not recorded) to hand
// a shard this node owns at epoch to it now (a lazy pull on first access).
// Concurrent pulls of one shard share one call. A holder that cannot be
// reached is answered UNAVAILABLE with reason NODE_DOWN.
func (m *Mover) Pull(ctx context.Context, shardID, holder, addr string, epoch uint64) error {
	call := &pullCall{done: make(chan struct{})}
	if prev, loaded := m.pulls.LoadOrStore(shardID, call); loaded {
		p := prev.(*pullCall)
		select {
		case <-p.done:
			return p.err
		case <-ctx.Done():
			return api.Wrap(shardhost.ErrShardMoving, "shard "+shardID+": "+ctx.Err().Error())
		}
	}
	defer func() {
		m.pulls.Delete(shardID)
		close(call.done)
	}()
	call.err = m.pullOnce(ctx, shardID, holder, addr, epoch)
	return call.err
}

func (m *Mover) pullOnce(ctx context.Context, shardID, holder, addr string, epoch uint64) error {
	if addr == "" {
		return nodeDown(shardID, holder, "its address is not recorded")
	}
	p, err := m.cfg.Peers.Peer(addr)
	if err != nil {
		return nodeDown(shardID, holder, err.Error())
	}
	if _, err := p.Pull(ctx, shardID, m.cfg.NodeID, epoch); err != nil {
		if api.CodeOf(err) == codes.Unavailable {
			if r, _ := api.ReasonOf(err); r == "" {
				return nodeDown(shardID, holder, err.Error())
			}
		}
		return err
	}
	return nil
}

func nodeDown(shardID, holder, why string) *api.Error {
	return &api.Error{
		Code:   codes.Unavailable,
		Msg:    fmt.Sprintf("shard %s is held by node %s, which cannot be reached: %s", shardID, holder, why),
		Reason: api.ReasonNodeDown,
		Meta:   map[string]string{"shard": shardID, "node": holder},
	}
}
