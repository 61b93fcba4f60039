package raftglobal

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/sqlitex"
	"google.golang.org/grpc/codes"
)

func TestAPIKeys(t *testing.T) {
	c := NewTestCluster(t, 3, 0)
	ctx := ctxT(t, 30*time.Second)
	leader := c.WaitForLeader(10 * time.Second)
	follower := c.Node(c.Followers()[0])

	hash := sha256.Sum256([]byte("secret"))
	k, err := leader.PutKey(ctx, APIKey{ID: "0123456789abcdef", Name: "ci", Role: "service", Hash: hash[:]})
	if err != nil {
		t.Fatal(err)
	}
	if k.CreatedMs == 0 || k.RevokedMs != 0 {
		t.Fatalf("stored key: %+v", k)
	}
	if _, err := leader.PutKey(ctx, APIKey{ID: "0123456789abcdef", Name: "again", Role: "admin", Hash: hash[:]}); !errors.Is(err, ErrKeyExists) {
		t.Fatalf("second PutKey with the same ID: %v", err)
	}
	if _, err := follower.PutKey(ctx, APIKey{ID: "1123456789abcdef", Name: "f", Role: "client", Hash: hash[:]}); err == nil {
		t.Fatal("PutKey on a follower succeeded")
	} else if _, ok := isNotLeader(err); !ok {
		t.Fatalf("PutKey on a follower: %v", err)
	}
	for _, bad := range []APIKey{
		{Name: "x", Role: "admin", Hash: hash[:]},
		{ID: "a", Role: "admin", Hash: hash[:]},
		{ID: "a", Name: "x", Hash: hash[:]},
		{ID: "a", Name: "x", Role: "admin", Hash: []byte("short")},
	} {
		if _, err := leader.PutKey(ctx, bad); api.CodeOf(err) != codes.InvalidArgument {
			t.Fatalf("PutKey(%+v): %v, want INVALID_ARGUMENT", bad, err)
		}
	}

	// The follower's replica sees the key once it has applied the write.
	var got *APIKey
	for deadline := time.Now().Add(10 * time.Second); got == nil; {
		if got, err = follower.LookupKey(ctx, k.ID, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if got == nil && time.Now().After(deadline) {
			t.Fatal("the follower never saw the key")
		}
		if got == nil {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if got.Name != "ci" || got.Role != "service" || !bytes.Equal(got.Hash, hash[:]) || got.CreatedMs != k.CreatedMs {
		t.Fatalf("looked up %+v, stored %+v", got, k)
	}
	if none, err := leader.LookupKey(ctx, "ffffffffffffffff", 0); err != nil || none != nil {
		t.Fatalf("unknown ID: %+v, %v", none, err)
	}

	// User SQL cannot read the table, not even its IDs.
	if _, err := leader.Read(ctx, api.ReadOptions{}, Command{SQL: []string{"SELECT id FROM __lunora_keys"}}); !errors.Is(err, sqlitex.ErrSandbox) {
		t.Fatalf("user SQL reading __lunora_keys: %v, want the sandbox's refusal", err)
	}

	r, err := leader.RevokeKey(ctx, k.ID)
	if err != nil || r.RevokedMs == 0 || r.ID != k.ID {
		t.Fatalf("RevokeKey: %+v, %v", r, err)
	}
	again, err := leader.RevokeKey(ctx, k.ID)
	if err != nil || again.RevokedMs != r.RevokedMs {
		t.Fatalf("second RevokeKey: %+v, %v (first revocation at %d)", again, err, r.RevokedMs)
	}
	if _, err := leader.RevokeKey(ctx, "nope"); api.CodeOf(err) != codes.NotFound {
		t.Fatalf("RevokeKey of an unknown key: %v", err)
	}
	if err := follower.WaitApplied(ctx, leader.fsm.applied.Load()); err != nil {
		t.Fatal(err)
	}
	if got, err := follower.LookupKey(ctx, k.ID, 5*time.Second); err != nil || got == nil || got.RevokedMs != r.RevokedMs {
		t.Fatalf("follower's record after the revocation: %+v, %v", got, err)
	}

	k2, err := leader.PutKey(ctx, APIKey{ID: "2123456789abcdef", Name: "app", Role: "client", Hash: hash[:]})
	if err != nil {
		t.Fatal(err)
	}
	keys, more, err := leader.Keys(ctx, 10)
	if err != nil || more || len(keys) != 2 || keys[0].ID != k.ID || keys[1].ID != k2.ID {
		t.Fatalf("Keys: %+v more=%v err=%v", keys, more, err)
	}
	keys, more, err = leader.Keys(ctx, 1)
	if err != nil || !more || len(keys) != 1 {
		t.Fatalf("Keys(limit 1): %+v more=%v err=%v", keys, more, err)
	}
}

// A replica cut off from the leader refuses to look keys up (it could
// miss a revocation) once its last contact is older than the bound asked.
func TestLookupKeyRefusesStaleReplica(t *testing.T) {
	c := NewTestCluster(t, 3, 0)
	ctx := ctxT(t, 30*time.Second)
	c.WaitForLeader(10 * time.Second)
	id := c.Followers()[0]
	c.Partition(id)
	follower := c.Node(id)
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := follower.LookupKey(ctx, "0123456789abcdef", 300*time.Millisecond)
		if errors.Is(err, ErrTooStale) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("a partitioned replica kept answering key lookups")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
