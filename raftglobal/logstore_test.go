package raftglobal

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// TestWALTailTruncationSurvivesReopen: Raft deletes a log suffix when a
// new leader's log disagrees with a follower's. With raft-wal v0.4.0, a
// tail truncation reaching back into a sealed segment left that segment
// without its index block, and the next open panicked in raft.NewRaft
// ("sealed segment has no index block") — a node that could not restart,
// seen once by the randomized cluster test. v0.4.1 fixed it upstream
// (hashicorp/raft-wal#33); this pins the behaviour.
func TestWALTailTruncationSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	const segment = 8 << 10
	open := func() walStore {
		s, err := openWAL(dir, segment, hclog.NewNullLogger())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	entry := func(i uint64) *raft.Log {
		return &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: bytes.Repeat([]byte{byte(i)}, 512)}
	}
	s := open()
	for i := uint64(1); i <= 60; i++ { // several sealed segments
		if err := s.StoreLogs([]*raft.Log{entry(i)}); err != nil {
			t.Fatal(err)
		}
	}
	// Truncate back into an earlier, sealed segment, append anew, reopen.
	if err := s.DeleteRange(20, 60); err != nil {
		t.Fatal(err)
	}
	for i := uint64(20); i <= 25; i++ {
		if err := s.StoreLogs([]*raft.Log{entry(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open()
	defer s.Close()
	first, err := s.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	last, err := s.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	if first != 1 || last != 25 {
		t.Fatalf("after reopen: first %d last %d, want 1 and 25", first, last)
	}
	for i := first; i <= last; i++ {
		var l raft.Log
		if err := s.GetLog(i, &l); err != nil {
			t.Fatalf("log %d after reopen: %v", i, err)
		}
		if !bytes.Equal(l.Data, entry(i).Data) {
			t.Fatal(fmt.Sprintf("log %d after reopen holds other data", i))
		}
	}
}
