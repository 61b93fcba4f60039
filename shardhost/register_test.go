package shardhost_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/shardhost"
	"google.golang.org/grpc/codes"
)

// ambiguousRegistry commits every registration but answers the first one
// with an error, as a Raft write does when leadership is lost after the
// entry was committed.
type ambiguousRegistry struct {
	mu      sync.Mutex
	holders map[string]string
	failed  bool
}

func (r *ambiguousRegistry) ShardHolder(_ context.Context, id string) (string, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h, ok := r.holders[id]
	return h, ok, nil
}

func (r *ambiguousRegistry) RegisterShard(_ context.Context, id string) (bool, string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if h, ok := r.holders[id]; ok {
		return true, h, nil
	}
	r.holders[id] = "n1"
	if !r.failed {
		r.failed = true
		return false, "", api.Errorf(codes.Unavailable, "leadership lost while the write was in flight: it may or may not have been applied")
	}
	return false, "n1", nil
}

// registryHost starts a host as node n1 with reg as its shard registry,
// and returns its data directory.
func registryHost(t *testing.T, reg shardhost.Registry) (*shardhost.Host, string) {
	dir := t.TempDir()
	return newHost(t, func(c *shardhost.Config) {
		c.Dir = dir
		c.NodeID = "n1"
		c.Registry = reg
	}), dir
}

// TestAmbiguousRegistrationKeepsTheFile: a new shard whose registration
// failed with an unknown outcome — it had in fact committed — must stay
// servable. The file used to be deleted on any registration error, leaving
// the registry naming this node as the holder of a file that was gone: the
// shard refused for good (the randomized cluster test's open bug).
func TestAmbiguousRegistrationKeepsTheFile(t *testing.T) {
	reg := &ambiguousRegistry{holders: map[string]string{}}
	h, _ := registryHost(t, reg)
	ctx := context.Background()
	if _, err := send(ctx, h, "amb", "a", "first"); api.CodeOf(err) != codes.Unavailable {
		t.Fatalf("first write: %v, want the registration's UNAVAILABLE", err)
	}
	res, err := send(ctx, h, "amb", "a", "second")
	if err != nil {
		t.Fatalf("the shard is not servable after an ambiguous registration: %v", err)
	}
	if res.Seq != 1 || count(t, h, "amb") != 1 {
		t.Fatalf("after the retry: seq %d, %d rows; want the one acknowledged write", res.Seq, count(t, h, "amb"))
	}
}

// TestUnregisteredFileGoesWhenAnotherNodeHoldsTheShard: the file a failed
// registration left is removed once the registry names another holder
// (it was never served), so no stray copy is left behind.
func TestUnregisteredFileGoesWhenAnotherNodeHoldsTheShard(t *testing.T) {
	reg := &ambiguousRegistry{holders: map[string]string{}}
	h, dir := registryHost(t, reg)
	ctx := context.Background()
	// The registration fails, its outcome unknown; here it did not commit
	// for n1 after all: another node registered the shard meanwhile.
	reg.mu.Lock()
	reg.failed = false
	reg.mu.Unlock()
	if _, err := send(ctx, h, "amb2", "a", "first"); err == nil {
		t.Fatal("first write succeeded; want the registration's error")
	}
	reg.mu.Lock()
	reg.holders["room_id=amb2"] = "n9"
	reg.mu.Unlock()
	if n := len(shardFiles(t, dir)); n != 1 {
		t.Fatalf("%d shard files after the failed registration, want the one kept", n)
	}
	_, err := send(ctx, h, "amb2", "a", "second")
	if !errors.Is(err, shardhost.ErrShardElsewhere) && api.CodeOf(err) != codes.Unavailable {
		t.Fatalf("second write: %v, want the shard answered elsewhere", err)
	}
	if n := len(shardFiles(t, dir)); n != 0 {
		t.Fatalf("%d shard files after another node took the shard, want none (it was never registered here)", n)
	}
}

// TestUnsettledRegistrationIsSettledWithoutARequest: no later request may
// ever reach the node that kept a file after a failed registration (the
// router asks the registry first), so the host settles it itself, and
// after a restart too: the copy goes once the registry names another
// holder — the randomized cluster test's stray never-served copy.
func TestUnsettledRegistrationIsSettledWithoutARequest(t *testing.T) {
	for _, restart := range []bool{false, true} {
		t.Run(map[bool]string{false: "running", true: "restarted"}[restart], func(t *testing.T) {
			reg := &ambiguousRegistry{holders: map[string]string{}}
			dir := t.TempDir()
			cfgMod := func(c *shardhost.Config) {
				c.Dir = dir
				c.NodeID = "n1"
				c.Registry = reg
			}
			h := newHost(t, cfgMod)
			ctx := context.Background()
			reg.mu.Lock()
			reg.failed = false
			reg.mu.Unlock()
			if _, err := send(ctx, h, "amb3", "a", "first"); err == nil {
				t.Fatal("first write succeeded; want the registration's error")
			}
			if got := h.Unsettled(); len(got) != 1 {
				t.Fatalf("unsettled registrations %v, want the one that failed", got)
			}
			reg.mu.Lock()
			reg.holders["room_id=amb3"] = "n9"
			reg.mu.Unlock()
			if restart {
				sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				if err := h.Shutdown(sctx); err != nil {
					t.Fatal(err)
				}
				h = newHost(t, cfgMod)
				if got := h.Unsettled(); len(got) != 1 {
					t.Fatalf("after a restart, unsettled registrations %v, want the one that failed", got)
				}
			}
			waitFor(t, 15*time.Second, func() error {
				if n := len(shardFiles(t, dir)); n != 0 {
					return fmt.Errorf("%d shard files, want none", n)
				}
				if got := h.Unsettled(); len(got) != 0 {
					return fmt.Errorf("unsettled registrations %v", got)
				}
				return nil
			})
		})
	}
}

// TestUnsettledRegistrationThatCommittedIsKept: when the failed
// registration had in fact committed, settling keeps the file and the
// shard serves the next write.
func TestUnsettledRegistrationThatCommittedIsKept(t *testing.T) {
	reg := &ambiguousRegistry{holders: map[string]string{}}
	h, dir := registryHost(t, reg)
	ctx := context.Background()
	if _, err := send(ctx, h, "amb4", "a", "first"); err == nil {
		t.Fatal("first write succeeded; want the registration's error")
	}
	waitFor(t, 15*time.Second, func() error {
		if got := h.Unsettled(); len(got) != 0 {
			return fmt.Errorf("unsettled registrations %v", got)
		}
		return nil
	})
	if n := len(shardFiles(t, dir)); n != 1 {
		t.Fatalf("%d shard files, want the registered shard's", n)
	}
	if res, err := send(ctx, h, "amb4", "a", "second"); err != nil || res.Seq != 1 {
		t.Fatalf("write after settling: %v, %v", res, err)
	}
}

// refusingRegistry applies every registration and refuses it, as the
// registry does for a node outside the newest ring epoch.
type refusingRegistry struct{}

func (refusingRegistry) ShardHolder(context.Context, string) (string, bool, error) {
	return "", false, nil
}

func (refusingRegistry) RegisterShard(_ context.Context, id string) (bool, string, error) {
	return false, "", &api.Error{Code: codes.Unavailable, Reason: api.ReasonNotOwner, Msg: "the node is not in the newest ring epoch: node n1 cannot create shard " + id}
}

// TestRefusedRegistrationLeavesNothing: a registration the registry
// applied and refused can never commit later, so the new file goes at
// once and nothing is left to settle.
func TestRefusedRegistrationLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	h := newHost(t, func(c *shardhost.Config) {
		c.Dir = dir
		c.NodeID = "n1"
		c.Registry = refusingRegistry{}
	})
	if _, err := send(context.Background(), h, "gone", "a", "first"); api.CodeOf(err) != codes.Unavailable {
		t.Fatalf("write on a node outside the ring: %v, want UNAVAILABLE", err)
	}
	if n := len(shardFiles(t, dir)); n != 0 {
		t.Fatalf("%d shard files after a refused registration, want none", n)
	}
	if got := h.Unsettled(); len(got) != 0 {
		t.Fatalf("unsettled registrations %v after a refusal, want none", got)
	}
}

// TestLeavingHostCreatesNothingAndSettlesEverything: a leaving node stops
// creating shards (a registration of its could never commit once its
// leave's epoch has), keeps serving the ones it has, and SettleAll retries
// a registration in doubt until the registry answers — the randomized
// cluster test's copy left behind on a node that had left.
func TestLeavingHostCreatesNothingAndSettlesEverything(t *testing.T) {
	reg := &ambiguousRegistry{holders: map[string]string{}}
	h, dir := registryHost(t, reg)
	ctx := context.Background()
	reg.mu.Lock()
	reg.failed = true // registrations answer at once
	reg.mu.Unlock()
	if _, err := send(ctx, h, "kept", "a", "first"); err != nil {
		t.Fatal(err)
	}
	// A registration in doubt: the registry answers it with an error and,
	// here, does not commit it; another node takes the shard.
	reg.mu.Lock()
	reg.failed = false
	reg.mu.Unlock()
	if _, err := send(ctx, h, "doubt", "a", "first"); err == nil {
		t.Fatal("first write succeeded; want the registration's error")
	}
	reg.mu.Lock()
	reg.holders["room_id=doubt"] = "n9"
	reg.mu.Unlock()

	h.StopCreating()
	_, err := send(ctx, h, "new", "a", "first")
	if r, _ := api.ReasonOf(err); api.CodeOf(err) != codes.Unavailable || r != api.ReasonNotOwner {
		t.Fatalf("a new shard on a leaving host: %v, want UNAVAILABLE NOT_OWNER", err)
	}
	if _, err := send(ctx, h, "kept", "a", "second"); err != nil {
		t.Fatalf("a shard the leaving host holds: %v", err)
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := h.SettleAll(sctx); err != nil {
		t.Fatal(err)
	}
	if got := h.Unsettled(); len(got) != 0 {
		t.Fatalf("unsettled after SettleAll: %v", got)
	}
	if n := len(shardFiles(t, dir)); n != 1 {
		t.Fatalf("%d shard files, want only the one the host holds", n)
	}
}

// TestSettleAllSaysWhatIsLeft: with the registry out of reach, SettleAll
// ends with ctx and names the registration still in doubt.
func TestSettleAllSaysWhatIsLeft(t *testing.T) {
	reg := &unreachableRegistry{}
	h, _ := registryHost(t, reg)
	ctx := context.Background()
	if _, err := send(ctx, h, "far", "a", "first"); api.CodeOf(err) != codes.Unavailable {
		t.Fatalf("first write: %v, want UNAVAILABLE", err)
	}
	sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	err := h.SettleAll(sctx)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "room_id=far") {
		t.Fatalf("SettleAll with the registry unreachable: %v, want the deadline naming room_id=far", err)
	}
}

// unreachableRegistry knows no shard and answers every registration with
// an outcome unknown.
type unreachableRegistry struct{}

func (*unreachableRegistry) ShardHolder(context.Context, string) (string, bool, error) {
	return "", false, nil
}

func (*unreachableRegistry) RegisterShard(context.Context, string) (bool, string, error) {
	return false, "", api.Errorf(codes.Unavailable, "the global tier has no Raft leader")
}

// blockingRegistry holds every registration until release is closed,
// then answers it with an outcome unknown; it commits nothing, and names
// holder as the shard's holder from then on.
type blockingRegistry struct {
	entered chan struct{}
	release chan struct{}
	holder  string
}

func (r *blockingRegistry) ShardHolder(context.Context, string) (string, bool, error) {
	select {
	case <-r.release:
		return r.holder, true, nil
	default:
		return "", false, nil
	}
}

func (r *blockingRegistry) RegisterShard(context.Context, string) (bool, string, error) {
	close(r.entered)
	<-r.release
	return false, "", api.Errorf(codes.Unavailable, "leadership lost while the write was in flight")
}

// TestSettleAllWaitsForCreationsUnderWay: a shard being created when the
// node began to leave ends in doubt after SettleAll has looked; SettleAll
// waits for it, so its file does not stay behind (seen in the randomized
// cluster test: a file created during the leave, kept on the node that
// left).
func TestSettleAllWaitsForCreationsUnderWay(t *testing.T) {
	reg := &blockingRegistry{entered: make(chan struct{}), release: make(chan struct{}), holder: "n9"}
	h, dir := registryHost(t, reg)
	ctx := context.Background()
	sent := make(chan error, 1)
	go func() {
		_, err := send(ctx, h, "racing", "a", "first")
		sent <- err
	}()
	<-reg.entered
	h.StopCreating()
	settled := make(chan error, 1)
	go func() {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		settled <- h.SettleAll(sctx)
	}()
	select {
	case err := <-settled:
		t.Fatalf("SettleAll returned (%v) while a creation was under way", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(reg.release)
	if err := <-sent; err == nil {
		t.Fatal("the write succeeded; want the registration's error")
	}
	if err := <-settled; err != nil {
		t.Fatal(err)
	}
	if n := len(shardFiles(t, dir)); n != 0 {
		t.Fatalf("%d shard files after SettleAll, want none", n)
	}
}

// laggingRegistry is a registry whose local replica lags: ShardHolder
// knows no shard, while registrations go through the log and see the
// holder. Its first registration ends in doubt and commits nothing.
type laggingRegistry struct {
	mu      sync.Mutex
	holders map[string]string
	doubted bool
}

func (*laggingRegistry) ShardHolder(context.Context, string) (string, bool, error) {
	return "", false, nil
}

func (r *laggingRegistry) RegisterShard(_ context.Context, id string) (bool, string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.doubted {
		r.doubted = true
		return false, "", api.Errorf(codes.Unavailable, "unreachable: no connection could be made")
	}
	if h, ok := r.holders[id]; ok {
		return true, h, nil
	}
	r.holders[id] = "n1"
	return false, "n1", nil
}

// TestUnregisteredFileGoesWhenTheRegistrationFindsAnotherHolder: the file
// a registration in doubt left goes when the next registration finds
// another node registered the shard meanwhile — also when this node's
// replica of the registry lagged and did not say so first (the randomized
// cluster test: the settling activation kept the file, "held by n4 in the
// registry, its file is on [n1 n4]").
func TestUnregisteredFileGoesWhenTheRegistrationFindsAnotherHolder(t *testing.T) {
	reg := &laggingRegistry{holders: map[string]string{}}
	h, dir := registryHost(t, reg)
	ctx := context.Background()
	if _, err := send(ctx, h, "lag", "a", "first"); api.CodeOf(err) != codes.Unavailable {
		t.Fatalf("first write: %v, want the registration's UNAVAILABLE", err)
	}
	if n := len(shardFiles(t, dir)); n != 1 {
		t.Fatalf("%d shard files after the registration in doubt, want the one kept", n)
	}
	reg.mu.Lock()
	reg.holders["room_id=lag"] = "n4"
	reg.mu.Unlock()
	if _, err := send(ctx, h, "lag", "a", "second"); !errors.Is(err, shardhost.ErrShardElsewhere) {
		t.Fatalf("second write: %v, want the shard answered elsewhere", err)
	}
	if n := len(shardFiles(t, dir)); n != 0 {
		t.Fatalf("%d shard files after the registry named n4, want none", n)
	}
	if got := h.Unsettled(); len(got) != 0 {
		t.Fatalf("unsettled registrations %v, want none", got)
	}
}
