package raftglobal

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"google.golang.org/grpc/codes"
)

// TestClusterConsistency walks a 3-voter, 1-non-voter cluster through the
// read and write paths and the failures the brief names.
func TestClusterConsistency(t *testing.T) {
	c := NewTestCluster(t, 3, 1, withSchema)
	ctx := ctxT(t, 60*time.Second)
	leader := c.WaitForLeader(10 * time.Second)

	// Writes via the leader, with bookmarks.
	var last uint64
	for i := 0; i < 10; i++ {
		res, err := leader.Write(ctx, put(fmt.Sprintf("k%d", i), int64(i)))
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if res.RowsAffected != 1 || res.Seq <= last {
			t.Fatalf("write %d: %+v (last seq %d)", i, res, last)
		}
		last = res.Seq
	}

	// A follower's write names the leader.
	follower := c.Node(c.Followers()[0])
	_, err := follower.Write(ctx, put("x", 1))
	nl, ok := isNotLeader(err)
	if !ok || nl.LeaderID != leader.NodeID() || nl.LeaderAddr != leader.Addr() {
		t.Fatalf("follower write: %v (%+v), want NotLeaderError naming %s", err, nl, leader.NodeID())
	}
	wantCode(t, err, codes.Unavailable)

	// A strong read on a follower is refused the same way.
	_, err = follower.Read(ctx, api.ReadOptions{Consistency: api.Strong}, countKV())
	if _, ok := isNotLeader(err); !ok {
		t.Fatalf("follower strong read: %v", err)
	}

	// A bookmark read on the non-voter sees the last write.
	nv := c.Node(c.NonVoters()[0])
	res, err := nv.Read(ctx, api.ReadOptions{Consistency: api.Bookmark, Bookmark: last}, get("k9"))
	if err != nil {
		t.Fatalf("bookmark read on non-voter: %v", err)
	}
	if scalar(t, res) != 9 || res.Seq < last {
		t.Fatalf("bookmark read: %+v", res)
	}

	// The default consistency (api.ReadOptions is the one options type):
	// Bookmark when a bookmark is given, else Strong; Bookmark without a
	// bookmark is refused.
	if res, err := nv.Read(ctx, api.ReadOptions{Bookmark: last}, get("k9")); err != nil || scalar(t, res) != 9 {
		t.Fatalf("default read with a bookmark on the non-voter: %+v %v", res, err)
	}
	if _, err := follower.Read(ctx, api.ReadOptions{}, countKV()); err == nil {
		t.Fatal("default read without a bookmark served by a follower (want strong: the leader)")
	} else if _, ok := isNotLeader(err); !ok {
		t.Fatalf("default read on a follower: %v", err)
	}
	_, err = nv.Read(ctx, api.ReadOptions{Consistency: api.Bookmark}, countKV())
	wantCode(t, err, codes.InvalidArgument)

	// A bookmark from the future fails fast, on the leader and elsewhere.
	for _, s := range []*Store{leader, nv} {
		start := time.Now()
		_, err = s.Read(ctx, api.ReadOptions{Consistency: api.Bookmark, Bookmark: last + 1_000_000}, countKV())
		if !errors.Is(err, ErrFutureBookmark) {
			t.Fatalf("%s: future bookmark: %v", s.NodeID(), err)
		}
		wantCode(t, err, codes.FailedPrecondition)
		if d := time.Since(start); d > time.Second {
			t.Fatalf("%s: future bookmark took %v", s.NodeID(), d)
		}
	}

	// Kill the leader: a new one is elected and a strong read sees every
	// acknowledged write.
	old := leader.NodeID()
	c.KillNode(old)
	leader = c.WaitForLeader(10 * time.Second)
	if leader.NodeID() == old {
		t.Fatalf("the killed node is still leader")
	}
	res, err = leader.Read(ctx, api.ReadOptions{Consistency: api.Strong}, countKV())
	if err != nil {
		t.Fatalf("strong read after failover: %v", err)
	}
	if n := scalar(t, res); n != 10 {
		t.Fatalf("strong read after failover: %d rows, want 10", n)
	}
	res, err = leader.Write(ctx, put("after", 1))
	if err != nil {
		t.Fatalf("write after failover: %v", err)
	}
	c.RestartNode(old)
	c.WaitForApplied(res.Seq, 10*time.Second)

	// Partition the leader away: a stale read on a node of the majority
	// still answers.
	leader = c.WaitForLeader(10 * time.Second)
	c.Partition(leader.NodeID())
	other := c.Node(c.NonVoters()[0])
	res, err = other.Read(ctx, api.ReadOptions{Consistency: api.Stale}, countKV())
	if err != nil || scalar(t, res) != 11 {
		t.Fatalf("stale read during a partition: %+v %v", res, err)
	}
	// …and one with a freshness bound is refused by the partitioned leader's
	// side once it has stepped down and lost contact.
	isolated := leader
	waitFor(t, 5*time.Second, func() error {
		if isolated.IsLeader() {
			return errors.New("isolated leader has not stepped down")
		}
		return nil
	})
	// (Raft counts stepping down as contact, so the bound bites 50ms later.)
	waitFor(t, 5*time.Second, func() error {
		_, err := isolated.Read(ctx, api.ReadOptions{Consistency: api.Stale, MaxStaleness: 50 * time.Millisecond}, countKV())
		if !errors.Is(err, ErrTooStale) {
			return fmt.Errorf("bounded stale read on the isolated node: %v", err)
		}
		wantCode(t, err, codes.Unavailable)
		return nil
	})
	// A write on the isolated node: no leader → UNAVAILABLE within a bound.
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	_, err = isolated.Write(wctx, put("lost", 1))
	cancel()
	wantCode(t, err, codes.Unavailable)
	if !errors.Is(err, ErrNotLeader) {
		t.Fatalf("isolated write: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("isolated write took %v", d)
	}
	c.Heal()
	leader = c.WaitForLeader(10 * time.Second)
	res, err = leader.Read(ctx, api.ReadOptions{Consistency: api.Strong}, countKV())
	if err != nil || scalar(t, res) != 11 {
		t.Fatalf("strong read after heal: %+v %v", res, err)
	}
}

// TestNoQuorumWrite: with 2 of 3 voters down the survivor answers writes
// with UNAVAILABLE within ApplyTimeout, not a hang.
func TestNoQuorumWrite(t *testing.T) {
	c := NewTestCluster(t, 3, 0, withSchema)
	ctx := ctxT(t, 30*time.Second)
	leader := c.WaitForLeader(10 * time.Second)
	if _, err := leader.Write(ctx, put("a", 1)); err != nil {
		t.Fatal(err)
	}
	survivor := c.Followers()[0]
	for _, id := range c.IDs() {
		if id != survivor {
			c.KillNode(id)
		}
	}
	s := c.Node(survivor)
	// At once, the survivor may still name the dead leader: UNAVAILABLE.
	_, err := s.Write(ctx, put("b", 2))
	wantCode(t, err, codes.Unavailable)
	// Once its election timer has fired it knows no leader, and a write
	// waits (bounded by ApplyTimeout, 3s locally) for one, then gives up.
	waitFor(t, 5*time.Second, func() error {
		if id, _ := s.Leader(); id != "" {
			return fmt.Errorf("still names leader %s", id)
		}
		return nil
	})
	start := time.Now()
	_, err = s.Write(ctx, put("b", 2))
	wantCode(t, err, codes.Unavailable)
	if !errors.Is(err, ErrNoLeader) || !errors.Is(err, ErrNotLeader) {
		t.Fatalf("write without quorum: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("write without quorum took %v", d)
	}
	// A bookmark read it cannot satisfy is UNAVAILABLE too, not a hang.
	rctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	_, err = s.Read(rctx, api.ReadOptions{Consistency: api.Bookmark, Bookmark: s.AppliedIndex() + 1}, countKV())
	wantCode(t, err, codes.Unavailable)
	t.Logf("no quorum: write %v, bookmark read %v", errors.Unwrap(err), err)
}
