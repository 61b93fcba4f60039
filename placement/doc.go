// Package placement maps shard IDs onto a weighted set of nodes with rendezvous hashing, deterministically and without I/O, and plans the moves between two rings.
package placement
