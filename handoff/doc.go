// Package handoff moves a shard's file from the node that holds it to
// another node, keeping one live copy (invariant I3); DESIGN.md has the
// protocol, its journals, crash points and commit point.
package handoff
