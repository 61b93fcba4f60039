package sqlitex

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/lunora/lunora/api"
	"google.golang.org/grpc/codes"
)

// budgetChunk is how far ahead of a growing result QueryRows reserves, so
// that a result takes a few reservations, not one per row.
const budgetChunk = 64 << 10

// budgetRetryAfter is the retry hint when the budget is in use.
const budgetRetryAfter = 200 * time.Millisecond

// ErrBudget: the node's memory budget for results is in use.
var ErrBudget = &api.Error{Code: codes.ResourceExhausted, Msg: "node is at its memory budget for results", RetryAfter: budgetRetryAfter}

// Budget bounds the bytes of results a process collects at once, summed
// over every connection: each result reserves its encoded size as its rows
// arrive and gives it back when the result is released. A nil *Budget
// bounds nothing. Safe for concurrent use.
type Budget struct {
	max  int64
	used atomic.Int64
}

// NewBudget returns a budget of max bytes.
func NewBudget(max int64) *Budget { return &Budget{max: max} }

func (b *Budget) limit() int64 {
	if b == nil {
		return 0
	}
	return b.max
}

// InUse reports the bytes reserved now.
func (b *Budget) InUse() int64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}

func (b *Budget) reserve(n int64) error {
	if b == nil || n <= 0 {
		return nil
	}
	if b.used.Add(n) > b.max {
		b.used.Add(-n)
		return api.Wrap(ErrBudget, fmt.Sprintf("%d of %d bytes reserved by results in flight", b.used.Load(), b.max))
	}
	return nil
}

// Release gives back n reserved bytes (see Limits.Held).
func (b *Budget) Release(n int64) {
	if b != nil && n > 0 {
		b.used.Add(-n)
	}
}
