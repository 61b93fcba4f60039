package placement

// Move is one shard whose owner differs between two rings.
type Move struct {
	ShardID  string
	From, To NodeID
}

// Plan returns the moves that take shardIDs from their owners on ring from
// to their owners on ring to, in the order of shardIDs (a repeated ID gives
// a repeated move). Shards that stay put are left out. With rendezvous
// hashing a shard moves only if its old owner left or lost weight, or a
// node that joined or gained weight now wins it, never between two nodes
// whose weights did not change. For a single join, leave or weight change
// the expected moved fraction is the minimum the change of shares requires.
// Both rings must be non-nil.
func Plan(from, to *Ring, shardIDs []string) []Move {
	if from == to {
		return nil
	}
	var moves []Move
	for _, id := range shardIDs {
		key := hashString(id)
		a, b := from.node(from.owner(key)), to.node(to.owner(key))
		if a != b {
			moves = append(moves, Move{ShardID: id, From: a, To: b})
		}
	}
	return moves
}

// Moved reports whether shardID has a different owner on ring to than on
// ring from. It hashes the ID once and does not allocate. Both rings must
// be non-nil.
func Moved(from, to *Ring, shardID string) bool {
	if from == to {
		return false
	}
	key := hashString(shardID)
	return from.node(from.owner(key)) != to.node(to.owner(key))
}
