package handoff

import (
	"context"
	"io"
	"sync"
	"time"
)

// rateLimiter spaces out bytes to a rate shared by every move.
type rateLimiter struct {
	mu     sync.Mutex
	perSec float64
	next   time.Time
}

func (l *rateLimiter) wait(ctx context.Context, n int) error {
	l.mu.Lock()
	now := time.Now()
	if l.next.Before(now) {
		l.next = now
	}
	at := l.next
	l.next = l.next.Add(time.Duration(float64(n) / l.perSec * float64(time.Second)))
	l.mu.Unlock()
	if d := time.Until(at); d > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
	}
	return nil
}

type limitedReader struct {
	ctx context.Context
	r   io.Reader
	l   *rateLimiter
}

func (r *limitedReader) Read(p []byte) (int, error) {
	// Small reads keep the rate smooth (and a stream's progress visible)
	// rather than one wait per 256 KiB chunk.
	if len(p) > 16<<10 {
		p = p[:16<<10]
	}
	n, err := r.r.Read(p)
	if n > 0 {
		if werr := r.l.wait(r.ctx, n); werr != nil {
			return n, werr
		}
	}
	return n, err
}
