package lunoratest

import (
	"context"

	"github.com/lunora/lunora/raftglobal"
)

// FSMChecksum digests a stopped node's global-tier FSM file the way
// raftglobal.Store.Checksum digests a running one (raftglobal.ChecksumFile),
// so replicas can be compared after the processes exit.
func FSMChecksum(ctx context.Context, path string) (index uint64, sum string, err error) {
	c, err := raftglobal.ChecksumFile(ctx, path)
	return c.Index, c.Sum, err
}
