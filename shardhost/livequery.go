package shardhost

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/schema"
)

// liveQuery is the state one (function, arguments) on a shard shares
// between all its subscribers: the last result, keyed when the result has
// a key, and a bounded history of the deltas that led to it. It is owned by
// the shard's notifier goroutine.
type liveQuery struct {
	spec    querySpec
	readSet []string // tables the statements read, lower case
	keyIdx  []int    // result columns holding the key, in primary key order; nil: no key
	keyed   bool     // keyIdx is set and the result's keys have been unique

	seq   uint64 // the commit sequence number of the last evaluation
	cols  []string
	rows  [][]any        // in the query's order; shared read-only with updates
	keys  []string       // encoded key of each row (keyed)
	index map[string]int // encoded key -> position in rows (keyed)

	// hist has one entry per evaluation, oldest first; the last is the
	// current result. It is what resuming is served from.
	hist     []histEntry
	histRows int // row changes held by hist

	dirty     bool   // a commit wrote a table the query reads since seq
	dirtyFrom uint64 // the first sequence number that may have changed the result

	subs      []*Subscription
	idleSince time.Time // when subs became empty
	err       error     // why a re-run failed (the query is dropped)
}

// histEntry is one evaluation at seq: the changes from the previous one
// (keyed queries) and how long the result stayed valid. The result at seq
// is exactly the result at every sequence number in [seq, until): until is
// the first commit after seq that wrote a table the query reads (a lower
// bound of it), or 0 while the entry is the current one and no such commit
// has been seen.
type histEntry struct {
	seq     uint64
	until   uint64
	changes []RowChange
}

func newLiveQuery(spec querySpec, reads []string, app *schema.App, res *api.Result) *liveQuery {
	q := &liveQuery{
		spec:    spec,
		readSet: reads,
		keyIdx:  keyColumns(app, reads, res.Columns),
		seq:     res.Seq,
		cols:    res.Columns,
		rows:    res.Rows,
		hist:    []histEntry{{seq: res.Seq}},
	}
	if q.keyIdx != nil {
		if keys, index, ok := q.indexRows(res.Rows); ok {
			q.keyed, q.keys, q.index = true, keys, index
		}
	}
	return q
}

// keyColumns derives a result's key: the primary key of the first table
// the query reads whose primary key columns are all result columns (by
// name, each exactly once). Nil when there is none: the query is unkeyed.
func keyColumns(app *schema.App, reads []string, cols []string) []int {
	for _, name := range reads {
		t := tableFold(app, name)
		if t == nil || len(t.PrimaryKey) == 0 {
			continue
		}
		idx := make([]int, len(t.PrimaryKey))
		ok := true
		for i, pk := range t.PrimaryKey {
			j := -1
			for c, col := range cols {
				if strings.EqualFold(col, pk) {
					if j >= 0 {
						j = -1 // ambiguous
						break
					}
					j = c
				}
			}
			if j < 0 {
				ok = false
				break
			}
			idx[i] = j
		}
		if ok {
			return idx
		}
	}
	return nil
}

func tableFold(app *schema.App, name string) *schema.Table {
	if t := app.Table(name); t != nil {
		return t
	}
	for _, t := range app.Tables {
		if strings.EqualFold(t.Name, name) {
			return t
		}
	}
	return nil
}

func (q *liveQuery) reads(table string) bool {
	for _, t := range q.readSet {
		if t == table {
			return true
		}
	}
	return false
}

// invalidate records that a commit from seq `from` on wrote a table the
// query reads.
func (q *liveQuery) invalidate(from uint64) {
	if !q.dirty || from < q.dirtyFrom {
		q.dirtyFrom = from
	}
	q.dirty = true
}

// indexRows encodes each row's key, reusing the previous result's key
// strings for rows still there. ok is false when two rows share a key.
func (q *liveQuery) indexRows(rows [][]any) (keys []string, index map[string]int, ok bool) {
	keys = make([]string, len(rows))
	index = make(map[string]int, len(rows))
	var buf []byte
	for i, row := range rows {
		buf = appendKey(buf[:0], row, q.keyIdx)
		if j, found := q.index[string(buf)]; found {
			keys[i] = q.keys[j]
		} else {
			keys[i] = string(buf)
		}
		if _, dup := index[keys[i]]; dup {
			return nil, nil, false
		}
		index[keys[i]] = i
	}
	return keys, index, true
}

// advance takes a re-run's result: it closes the current history entry,
// appends one for res and returns the update for subscribers, if the
// result changed. A result whose keys stop being unique turns the query
// unkeyed for good: a snapshot, then snapshots only.
func (q *liveQuery) advance(res *api.Result, maxEntries, maxRows int) (Update, bool) {
	q.dirty = false
	if res.Seq <= q.seq {
		// Every commit that marked the query dirty was already visible to
		// its last evaluation: the current entry stays valid.
		q.dirtyFrom = 0
		return Update{}, false
	}
	until := q.dirtyFrom
	if until <= q.seq {
		until = q.seq + 1
	}
	q.hist[len(q.hist)-1].until = until
	q.dirtyFrom = 0

	var u Update
	var changes []RowChange
	changed := false
	if q.keyed {
		if keys, index, ok := q.indexRows(res.Rows); ok {
			changes = q.diff(keys, index, res.Rows)
			changed = len(changes) > 0
			u = Update{Kind: UpdateDelta, Seq: res.Seq, Columns: res.Columns, Changes: changes, Keyed: true}
			q.keys, q.index = keys, index
		} else {
			q.keyed, q.keys, q.index = false, nil, nil
			changed = true
		}
	} else {
		changed = !stringsEqual(q.cols, res.Columns) || !rowsEqual(q.rows, res.Rows)
	}
	if !q.keyed {
		u = Update{Kind: UpdateSnapshot, Seq: res.Seq, Columns: res.Columns, Rows: res.Rows}
	}
	q.seq, q.cols, q.rows = res.Seq, res.Columns, res.Rows
	q.hist = append(q.hist, histEntry{seq: res.Seq, changes: changes})
	q.histRows += len(changes)
	q.trim(maxEntries, maxRows)
	return u, changed
}

// diff compares the new result with the current one by key: inserts,
// updates (the row changed) and deletes, ordered by key.
func (q *liveQuery) diff(keys []string, index map[string]int, rows [][]any) []RowChange {
	var out []RowChange
	inserts := 0
	for i, row := range rows {
		j, found := q.index[keys[i]]
		switch {
		case !found:
			out = append(out, RowChange{Op: ChangeInsert, Key: q.keyOf(row), Row: row})
			inserts++
		case !valuesEqual(q.rows[j], row):
			out = append(out, RowChange{Op: ChangeUpdate, Key: q.keyOf(row), Row: row})
		}
	}
	if len(q.index) > len(index)-inserts { // some old key is gone
		for k, j := range q.index {
			if _, found := index[k]; !found {
				out = append(out, RowChange{Op: ChangeDelete, Key: q.keyOf(q.rows[j])})
			}
		}
	}
	sortChanges(out)
	return out
}

func (q *liveQuery) keyOf(row []any) []any {
	k := make([]any, len(q.keyIdx))
	for i, j := range q.keyIdx {
		k[i] = row[j]
	}
	return k
}

// trim drops the oldest history entries past the bounds, always keeping
// the current one.
func (q *liveQuery) trim(maxEntries, maxRows int) {
	drop := 0
	for len(q.hist)-drop > 1 && (len(q.hist)-drop > maxEntries || q.histRows > maxRows) {
		q.histRows -= len(q.hist[drop].changes)
		drop++
	}
	if drop > 0 {
		n := copy(q.hist, q.hist[drop:])
		clear(q.hist[n:])
		q.hist = q.hist[:n]
	}
}

// firstUpdate is a new subscriber's first update. Without since, or when
// the history cannot vouch for the subscriber's state at since, it is a
// snapshot (Reset when since was given). Otherwise it is one delta holding
// every change after since, composed, at the current seq — or an empty
// delta at since when nothing changed: the subscriber is current.
// known is the newest commit the notifier has processed; a since beyond it
// is not vouched for.
func (q *liveQuery) firstUpdate(since, known uint64) Update {
	snap := Update{Kind: UpdateSnapshot, Seq: q.seq, Columns: q.cols, Rows: q.rows, Keyed: q.keyed}
	if since == 0 {
		return snap
	}
	i := q.covering(since, known)
	switch {
	case i < 0:
		snap.Reset = true
		return snap
	case !q.keyed:
		return snap // unkeyed: always a snapshot, but not a reset
	case i == len(q.hist)-1:
		return Update{Kind: UpdateDelta, Seq: since, Columns: q.cols, Keyed: true, Changes: []RowChange{}}
	}
	return Update{Kind: UpdateDelta, Seq: q.seq, Columns: q.cols, Keyed: true, Changes: composeChanges(q.hist[i+1:])}
}

// covering returns the history entry whose result is the result at since,
// or -1.
func (q *liveQuery) covering(since, known uint64) int {
	if since > known {
		return -1
	}
	i := sort.Search(len(q.hist), func(i int) bool { return q.hist[i].seq > since }) - 1
	if i < 0 {
		return -1
	}
	if u := q.hist[i].until; u != 0 && since >= u {
		return -1
	}
	return i
}

func (q *liveQuery) attach(s *Subscription) {
	s.q, s.pos = q, len(q.subs)
	q.subs = append(q.subs, s)
}

// detach removes s (swapping the last subscriber into its place).
func (q *liveQuery) detach(s *Subscription, now time.Time) {
	if s.q != q {
		return
	}
	last := len(q.subs) - 1
	q.subs[s.pos] = q.subs[last]
	q.subs[s.pos].pos = s.pos
	q.subs[last] = nil
	q.subs = q.subs[:last]
	s.q = nil
	if len(q.subs) == 0 {
		q.idleSince = now
	}
}

// composeChanges folds consecutive deltas into one: per key, the net
// change from before the first to after the last.
func composeChanges(entries []histEntry) []RowChange {
	pos := map[string]int{}
	var out []RowChange
	var buf []byte
	for _, e := range entries {
		for _, c := range e.changes {
			buf = appendValues(buf[:0], c.Key)
			i, found := pos[string(buf)]
			if !found {
				pos[string(buf)] = len(out)
				out = append(out, c)
				continue
			}
			out[i].Op = composeOp(out[i].Op, c.Op)
			out[i].Row = c.Row
		}
	}
	kept := out[:0]
	for _, c := range out {
		if c.Op != 0 {
			kept = append(kept, c)
		}
	}
	sortChanges(kept)
	if kept == nil {
		kept = []RowChange{}
	}
	return kept
}

// composeOp is the net effect of change prev followed by next on one key;
// 0 means no change (the row was absent before and after).
func composeOp(prev, next ChangeOp) ChangeOp {
	switch {
	case prev == 0:
		return next
	case prev == ChangeInsert && next == ChangeDelete:
		return 0
	case prev == ChangeInsert:
		return ChangeInsert
	case prev == ChangeDelete && next == ChangeInsert:
		return ChangeUpdate
	}
	return next
}

func sortChanges(cs []RowChange) {
	sort.Slice(cs, func(i, j int) bool { return compareValues(cs[i].Key, cs[j].Key) < 0 })
}

// appendKey encodes the key columns of row; equal keys encode equally.
func appendKey(buf []byte, row []any, idx []int) []byte {
	for _, j := range idx {
		buf = appendValue(buf, row[j])
	}
	return buf
}

func appendValues(buf []byte, vals []any) []byte {
	for _, v := range vals {
		buf = appendValue(buf, v)
	}
	return buf
}

func appendValue(buf []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return append(buf, 0)
	case int64:
		return binary.BigEndian.AppendUint64(append(buf, 1), uint64(x))
	case float64:
		return binary.BigEndian.AppendUint64(append(buf, 2), math.Float64bits(x))
	case string:
		return append(binary.AppendUvarint(append(buf, 3), uint64(len(x))), x...)
	case []byte:
		return append(binary.AppendUvarint(append(buf, 4), uint64(len(x))), x...)
	case bool:
		if x {
			return append(buf, 5, 1)
		}
		return append(buf, 5, 0)
	}
	s := fmt.Sprintf("%T:%v", v, v)
	return append(binary.AppendUvarint(append(buf, 6), uint64(len(s))), s...)
}

// compareValues orders value lists as SQLite orders values: NULL, then
// numbers, then text, then blobs.
func compareValues(a, b []any) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if c := compareValue(a[i], b[i]); c != 0 {
			return c
		}
	}
	return len(a) - len(b)
}

func compareValue(a, b any) int {
	ra, rb := rank(a), rank(b)
	if ra != rb {
		return ra - rb
	}
	switch x := a.(type) {
	case int64:
		if y, ok := b.(int64); ok {
			return cmp3(x < y, x > y)
		}
		fx, fy := toFloat(a), toFloat(b)
		return cmp3(fx < fy, fx > fy)
	case float64, bool:
		fx, fy := toFloat(a), toFloat(b)
		return cmp3(fx < fy, fx > fy)
	case string:
		return strings.Compare(x, b.(string))
	case []byte:
		return bytes.Compare(x, b.([]byte))
	case nil:
		return 0
	}
	return strings.Compare(fmt.Sprint(a), fmt.Sprint(b))
}

func rank(v any) int {
	switch v.(type) {
	case nil:
		return 0
	case int64, float64, bool:
		return 1
	case string:
		return 2
	case []byte:
		return 3
	}
	return 4
}

func toFloat(v any) float64 {
	switch x := v.(type) {
	case int64:
		return float64(x)
	case float64:
		return x
	case bool:
		if x {
			return 1
		}
	}
	return 0
}

func cmp3(less, greater bool) int {
	switch {
	case less:
		return -1
	case greater:
		return 1
	}
	return 0
}

func valuesEqual(a, b []any) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !valueEqual(a[i], b[i]) {
			return false
		}
	}
	return true
}

func valueEqual(a, b any) bool {
	switch x := a.(type) {
	case []byte:
		y, ok := b.([]byte)
		return ok && bytes.Equal(x, y)
	case nil, int64, float64, string, bool:
		return a == b
	}
	return fmt.Sprint(a) == fmt.Sprint(b)
}

func rowsEqual(a, b [][]any) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !valuesEqual(a[i], b[i]) {
			return false
		}
	}
	return true
}

func stringsEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
