package api

import "context"

// UpdateKind says what an Update of a live query carries.
type UpdateKind int

const (
	// UpdateSnapshot carries the full result in Rows.
	UpdateSnapshot UpdateKind = iota + 1
	// UpdateDelta carries keyed Changes.
	UpdateDelta
)

// ChangeOp is what happened to a keyed row.
type ChangeOp int

const (
	ChangeInsert ChangeOp = iota + 1
	ChangeUpdate
	ChangeDelete
)

// RowChange is one keyed change to a live query's result. Row is nil for
// deletes.
type RowChange struct {
	Op  ChangeOp
	Key []any
	Row []any
}

// Update is one event of a live query: its result (or the changes to it) as
// of commit Seq of ShardID.
type Update struct {
	Kind    UpdateKind
	Seq     uint64
	ShardID string
	Columns []string
	Rows    [][]any
	Changes []RowChange
	// Reset marks a snapshot sent because resuming was impossible.
	Reset bool
	// Keyed is false when the result has no key: every update is a
	// snapshot.
	Keyed bool
}

// Stream is a live query. It is used by one goroutine.
type Stream interface {
	// Next waits for the next update. It returns an error when the stream
	// ends: a coded *api.Error (a subscriber too slow, a shutdown), or ctx's.
	Next(ctx context.Context) (*Update, error)
	// Close ends the subscription.
	Close()
}
