// Package membership tells every Lunora process which other processes exist
// and which of them are reachable. It wraps HashiCorp memberlist (SWIM-style
// gossip): each member gossips a small Meta record (its ID, role, gRPC and blob
// addresses, lifecycle state, weight and the newest ring epoch it has seen),
// and the gossip layer's probes turn an unreachable member into Dead and a
// member that called Leave into Left.
//
// Membership is discovery and failure detection only. A member turning Dead
// or Left never moves a shard by itself: shard placement is owned by the ring
// kept in the global tier, and whoever manages that ring decides (using this
// package's view as one input) whether and when to re-place anything.
//
// Storage nodes join with RoleNode. Gateways join with RoleGateway so that
// they can find nodes and follow the ring epoch through gossip; they are
// members of the gossip cluster but never host shards.
//
// A member starts from a list of seeds. A seed that is a DNS name (typically a
// Kubernetes headless Service) is resolved to all of its addresses and every
// one of them is contacted. The first member of a cluster finds no one to
// talk to; Start still succeeds and a background loop keeps retrying the
// seeds, re-resolving names each time, for as long as the member knows no
// other member. After that it re-resolves the seeds every 30 s and joins any
// address that is not a member it knows alive, so that groups which formed
// apart (say, from partial DNS answers at startup) merge.
//
// Limitations inherited from memberlist v0.7.0: it reports joins, departures
// and metadata updates but never tells its user that a member is merely
// suspected, so Status Suspect exists for completeness but is not currently
// reported; and it does not say whether a departure was a failure or a
// graceful leave, so Leave first gossips a farewell marker in its metadata and
// members that saw the marker report Left (one that missed it reports Dead).
package membership
