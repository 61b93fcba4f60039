// Package sqlitex is Lunora's SQLite connection: the go-sqlite3 driver
// connection with the sandbox (authorizer), the lunora_* SQL functions and
// the per-connection state they report into, shared by the shard runtime
// and the global tier.
package sqlitex
