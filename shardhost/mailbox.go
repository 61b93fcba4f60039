package shardhost

import (
	"fmt"
	"sync"

	"github.com/lunora/lunora/api"
)

// mailbox is a shard's queue of mutations for its writer: first in, first
// out, bounded (offer refuses past max), and sized by what is queued. A
// channel of MailboxSize would hold its whole buffer (8 KiB at the default
// 1,024) for every active shard, used or not; an idle mailbox holds none.
type mailbox struct {
	mu     sync.Mutex
	q      []*mutation // queued from q[head]
	head   int
	max    int
	closed bool
	// ready has one slot: a token means the queue may have become
	// non-empty, or the mailbox closed, since the writer last looked.
	ready chan struct{}
}

// idleCap is the largest buffer an empty mailbox (or the writer's batch
// slice) keeps for the next burst.
const idleCap = 64

func newMailbox(max int) *mailbox {
	return &mailbox{max: max, ready: make(chan struct{}, 1)}
}

// offer queues m without waiting; it refuses (RESOURCE_EXHAUSTED with a
// retry hint) when max mutations are queued. A closed mailbox belongs to a
// shard that had no references left, so no caller can reach one.
func (b *mailbox) offer(m *mutation, shardID string) error {
	b.mu.Lock()
	if b.closed || len(b.q)-b.head >= b.max {
		b.mu.Unlock()
		return api.Wrap(ErrMailboxFull, fmt.Sprintf("shard %s has %d mutations queued", shardID, b.max))
	}
	b.q = append(b.q, m)
	b.mu.Unlock()
	select {
	case b.ready <- struct{}{}:
	default:
	}
	return nil
}

// wait blocks until a mutation is queued (true) or the mailbox is closed
// and empty (false). Only the writer waits.
func (b *mailbox) wait() bool {
	for {
		b.mu.Lock()
		n, closed := len(b.q)-b.head, b.closed
		b.mu.Unlock()
		switch {
		case n > 0:
			return true
		case closed:
			return false
		}
		<-b.ready
	}
}

// drain appends to got what is queued now, in order, until got holds max
// mutations, without waiting.
func (b *mailbox) drain(got []*mutation, max int) []*mutation {
	b.mu.Lock()
	defer b.mu.Unlock()
	for len(got) < max && b.head < len(b.q) {
		got = append(got, b.q[b.head])
		b.q[b.head] = nil
		b.head++
	}
	switch {
	case b.head == len(b.q) && cap(b.q) > idleCap:
		b.q, b.head = nil, 0
	case b.head == len(b.q):
		b.q, b.head = b.q[:0], 0
	case b.head >= len(b.q)/2:
		// Under steady load the queue may never empty: move what is left
		// to the front, so the buffer stays within about 2×max.
		n := copy(b.q, b.q[b.head:])
		clear(b.q[n:])
		b.q, b.head = b.q[:n], 0
	}
	return got
}

// len is the number of mutations queued.
func (b *mailbox) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.q) - b.head
}

// close ends the writer's loop once the queue is empty.
func (b *mailbox) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	select {
	case b.ready <- struct{}{}:
	default:
	}
}
