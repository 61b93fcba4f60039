package raftglobal

// NotLeader returns the error a leader-only operation gets on this node
// now: it names the current leader, if one is known.
func (s *Store) NotLeader() *NotLeaderError { return s.notLeader() }
