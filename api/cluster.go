package api

import "context"

// RingNode is one node of the cluster as routing sees it.
type RingNode struct {
	ID       string
	Weight   int
	GRPCAddr string
	State    string // joining, up, leaving, removed (the cluster metadata's word)
	// Shards is how many registered shards the node holds (Status only).
	Shards int64
	// Alive is the gossip view of the node (Status on a gateway only):
	// "alive", "suspect", "dead", "left" or "" when unknown.
	Alive string
}

// Ring is a ring epoch: the nodes shards are placed on, and every node the
// cluster metadata records.
type Ring struct {
	Epoch   uint64
	Nodes   []RingNode // the ring, by ID
	Members []RingNode // every recorded node, by ID
}

// ClusterStatus is the cluster part of Status.
type ClusterStatus struct {
	Ring          Ring
	MovesInFlight int64 // handoffs under way on the reporting node
}

type ringEpochKey struct{}

// WithRingEpoch returns ctx carrying the ring epoch a request was routed
// with; node-bound clients send it with the request.
func WithRingEpoch(ctx context.Context, epoch uint64) context.Context {
	return context.WithValue(ctx, ringEpochKey{}, epoch)
}

// RingEpochOf returns the ring epoch ctx carries, or 0 (not routed by the
// ring).
func RingEpochOf(ctx context.Context) uint64 {
	e, _ := ctx.Value(ringEpochKey{}).(uint64)
	return e
}

// HandoffHeader opens a handoff stream: which shard, from which node, at
// which ring epoch, and how many bytes follow.
type HandoffHeader struct {
	ShardID string
	From    string
	Epoch   uint64
	Size    int64
}
