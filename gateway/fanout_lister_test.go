package gateway_test

import (
	"context"
	"sort"
	"strings"
	"sync"

	"github.com/lunora/lunora/gateway"
)

// listingBackend is a fakeBackend that is also a gateway.ShardLister over a
// fixed registry, answering at most pageMax IDs a page.
type listingBackend struct {
	*fakeBackend
	ids     []string // the registry, any groups
	pageMax int

	mu    sync.Mutex
	lists []listCall
}

var _ gateway.ShardLister = (*listingBackend)(nil)

// listCall is one ListShards request.
type listCall struct {
	Group, After string
	Limit        int
}

func (l *listingBackend) ListShards(ctx context.Context, group, after string, limit int) ([]string, string, error) {
	l.mu.Lock()
	l.lists = append(l.lists, listCall{group, after, limit})
	l.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, "", err
	}
	var all []string
	for _, id := range l.ids {
		if strings.HasPrefix(id, group+"=") && id > after {
			all = append(all, id)
		}
	}
	sort.Strings(all)
	n := min(limit, l.pageMax, len(all))
	page := all[:n]
	next := ""
	if n < len(all) {
		next = page[n-1]
	}
	return page, next, nil
}

func (l *listingBackend) listCalls() []listCall {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]listCall(nil), l.lists...)
}

// withLister makes newEnv's backend a listingBackend over ids.
func withLister(lb **listingBackend, pageMax int, ids ...string) func(*gateway.Config) {
	return func(c *gateway.Config) {
		*lb = &listingBackend{fakeBackend: c.Backend.(*fakeBackend), ids: ids, pageMax: pageMax}
		c.Backend = *lb
	}
}
