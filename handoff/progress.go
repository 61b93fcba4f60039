package handoff

import (
	"io"
	"sort"
	"sync/atomic"
	"time"

	"github.com/lunora/lunora/api"
)

// progress is one stream under way: bytes counts what went through so far.
type progress struct {
	shardID, from, to string
	size              int64
	start             time.Time
	bytes             atomic.Int64
}

// track registers a stream for Streams until the returned func is called;
// r is wrapped to count the bytes that go through it.
func (m *Mover) track(shardID, from, to string, size int64, r io.Reader) (io.Reader, func()) {
	p := &progress{shardID: shardID, from: from, to: to, size: size, start: time.Now()}
	m.streams.Store(p, struct{}{})
	return &countingReader{r: r, n: &p.bytes}, func() { m.streams.Delete(p) }
}

// Streams lists the handoff streams under way here (sent and received),
// oldest first.
func (m *Mover) Streams() []api.ShardMove {
	var out []api.ShardMove
	m.streams.Range(func(k, _ any) bool {
		p := k.(*progress)
		out = append(out, api.ShardMove{ShardID: p.shardID, From: p.from, To: p.to, Bytes: p.bytes.Load(), Size: p.size, Elapsed: time.Since(p.start)})
		return true
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Elapsed > out[j].Elapsed })
	return out
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.n.Add(int64(n))
	return n, err
}
