// Package schema loads and validates lunora.yaml — the tables and functions
// of an application — and derives from it everything the request path needs:
// shard IDs, argument coercion and the DDL of each shard group.
package schema
