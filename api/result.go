package api

// Result is what a function call or an admin statement returns.
//
// Values in Rows are nil (NULL), int64, float64, string, []byte or bool —
// bool only for columns or arguments declared bool; SQLite itself stores
// them as 0/1.
type Result struct {
	Columns      []string
	Rows         [][]any
	Seq          uint64 // the shard's commit sequence number, see shardhost
	ShardID      string
	RowsAffected int64
}

// Status is what a process reports about itself.
type Status struct {
	NodeID        string
	NodeAddress   string
	Version       string
	ActiveShards  int64
	ShardsOnDisk  int64
	InFlight      int64
	UptimeSeconds int64
}
