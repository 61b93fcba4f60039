package shardhost

import "syscall"

// fdsPerShard is what an active shard may hold open: the database, its WAL
// and shared-memory files for the writer, the syncer's descriptor on the
// WAL (node durability; syncer.go), and a database handle per reader.
func fdsPerShard(readConns int) int { return 4 + readConns }

// clampMaxActive lowers maxActive so that active shards cannot exhaust the
// process's file descriptor limit, keeping a reserve for sockets.
func clampMaxActive(maxActive, readConns int) (int, uint64) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return maxActive, 0
	}
	const reserve = 1024
	if lim.Cur <= reserve {
		return 1, lim.Cur
	}
	fit := int((lim.Cur - reserve) / uint64(fdsPerShard(readConns)))
	if fit < maxActive {
		return max(fit, 1), lim.Cur
	}
	return maxActive, lim.Cur
}
