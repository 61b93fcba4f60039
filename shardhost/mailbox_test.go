package shardhost

import (
	"errors"
	"sync"
	"testing"
)

func TestMailbox(t *testing.T) {
	b := newMailbox(3)
	ms := make([]*mutation, 5)
	for i := range ms {
		ms[i] = &mutation{}
	}
	for _, m := range ms[:3] {
		if err := b.offer(m, "s"); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.offer(ms[3], "s"); !errors.Is(err, ErrMailboxFull) {
		t.Fatalf("a fourth mutation in a mailbox of 3: %v, want ErrMailboxFull", err)
	}
	if !b.wait() {
		t.Fatal("wait on a non-empty mailbox returned false")
	}
	got := b.drain(nil, 2)
	if len(got) != 2 || got[0] != ms[0] || got[1] != ms[1] {
		t.Fatalf("drain(2) = %v, want the first two in order", got)
	}
	if err := b.offer(ms[3], "s"); err != nil {
		t.Fatal(err)
	}
	got = b.drain(got[:0], 10)
	if len(got) != 2 || got[0] != ms[2] || got[1] != ms[3] {
		t.Fatalf("drain = %v, want the third and fourth in order", got)
	}
	if b.len() != 0 {
		t.Fatalf("drained mailbox: len %d", b.len())
	}

	// The writer waits until a mutation comes, and ends when the mailbox
	// closes empty.
	var wg sync.WaitGroup
	woke := make(chan bool, 1)
	wg.Go(func() { woke <- b.wait() })
	if err := b.offer(ms[4], "s"); err != nil {
		t.Fatal(err)
	}
	if !<-woke {
		t.Fatal("wait returned false with a mutation queued")
	}
	b.drain(nil, 10)
	b.close()
	if b.wait() {
		t.Fatal("wait on a closed, empty mailbox returned true")
	}
	wg.Wait()
}

// TestMailboxStaysBoundedUnderSteadyLoad: a queue that never empties (the
// writer takes part of it while more arrives) keeps its buffer near its
// bound, and a burst's buffer is not kept once it drains.
func TestMailboxStaysBoundedUnderSteadyLoad(t *testing.T) {
	b := newMailbox(100)
	next, want := 0, 0
	seen := make([]int, 0)
	ids := map[*mutation]int{}
	for round := 0; round < 10000; round++ {
		for b.len() < 100 {
			m := &mutation{}
			ids[m] = next
			next++
			if err := b.offer(m, "s"); err != nil {
				t.Fatal(err)
			}
		}
		for _, m := range b.drain(nil, 7) {
			seen = append(seen, ids[m])
			delete(ids, m)
		}
		if cap(b.q) > 4*100 {
			t.Fatalf("round %d: buffer capacity %d for at most 100 queued", round, cap(b.q))
		}
	}
	for _, id := range seen {
		if id != want {
			t.Fatalf("mutation %d taken where %d was next", id, want)
		}
		want++
	}
	b.drain(nil, 1000)
	if cap(b.q) > idleCap {
		t.Fatalf("an empty mailbox keeps a buffer of %d", cap(b.q))
	}
}
