package gateway

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/lunora/lunora/api"
	"google.golang.org/grpc/codes"
)

// compareValues orders two result values as SQLite's ORDER BY does with the
// BINARY collation: NULL < numbers (INTEGER and REAL compared by value, an
// integer and a real exactly) < TEXT (bytewise) < BLOB (bytewise). A bool
// counts as the integer 0 or 1 and a NaN as NULL (SQLite stores NaN as
// NULL). Values of any other Go type, which no shard returns, sort last, by
// type name then printed form, so the order stays total.
func compareValues(a, b any) int {
	ra, rb := valueRank(a), valueRank(b)
	if ra != rb {
		if ra < rb {
			return -1
		}
		return 1
	}
	switch ra {
	case rankNull:
		return 0
	case rankNumber:
		return compareNumbers(a, b)
	case rankText:
		return strings.Compare(a.(string), b.(string))
	case rankBlob:
		return bytes.Compare(a.([]byte), b.([]byte))
	}
	if c := strings.Compare(fmt.Sprintf("%T", a), fmt.Sprintf("%T", b)); c != 0 {
		return c
	}
	return strings.Compare(fmt.Sprint(a), fmt.Sprint(b))
}

const (
	rankNull = iota
	rankNumber
	rankText
	rankBlob
	rankOther
)

func valueRank(v any) int {
	switch x := v.(type) {
	case nil:
		return rankNull
	case float64:
		if math.IsNaN(x) {
			return rankNull
		}
		return rankNumber
	case int64, int, bool:
		return rankNumber
	case string:
		return rankText
	case []byte:
		return rankBlob
	}
	return rankOther
}

// number is an integer (isInt) or a real.
type number struct {
	isInt bool
	i     int64
	f     float64
}

func asNumber(v any) number {
	switch x := v.(type) {
	case int64:
		return number{isInt: true, i: x}
	case int:
		return number{isInt: true, i: int64(x)}
	case bool:
		if x {
			return number{isInt: true, i: 1}
		}
		return number{isInt: true}
	case float64:
		return number{f: x}
	}
	return number{}
}

func compareNumbers(a, b any) int {
	x, y := asNumber(a), asNumber(b)
	switch {
	case x.isInt && y.isInt:
		return cmpOrdered(x.i, y.i)
	case !x.isInt && !y.isInt:
		return cmpOrdered(x.f, y.f)
	case x.isInt:
		return compareIntReal(x.i, y.f)
	}
	return -compareIntReal(y.i, x.f)
}

// compareIntReal compares an integer with a (non-NaN) real exactly, without
// rounding the integer to a float64.
func compareIntReal(i int64, f float64) int {
	switch {
	case f >= 0x1p63:
		return -1
	case f < -0x1p63:
		return 1
	}
	t := math.Trunc(f)
	if c := cmpOrdered(i, int64(t)); c != 0 {
		return c
	}
	// Same integer part: the fraction decides.
	return cmpOrdered(0, f-t)
}

func cmpOrdered[T int64 | float64 | int](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// mergeRow is one row of one shard's answer, with what orders it.
type mergeRow struct {
	shard string
	pos   int // the row's position in its shard's answer
	key   any // the OrderBy value
	row   []any
}

// topKBefore orders rows for MergeTopK: by key (descending when desc), ties
// by shard ID then position, both ascending.
func topKBefore(a, b *mergeRow, desc bool) bool {
	c := compareValues(a.key, b.key)
	if desc {
		c = -c
	}
	if c != 0 {
		return c < 0
	}
	if a.shard != b.shard {
		return a.shard < b.shard
	}
	return a.pos < b.pos
}

// keysetCompare orders rows for MergeKeyset: by (key, shard ID), the whole
// pair descending when desc; rows equal in both (OrderBy not unique within
// a shard) by position, so the order stays deterministic.
func keysetCompare(a, b *mergeRow, desc bool) int {
	if c := keysetPosCompare(a.key, a.shard, b.key, b.shard, desc); c != 0 {
		return c
	}
	return cmpOrdered(a.pos, b.pos)
}

// keysetPosCompare compares the keyset positions (ka, sa) and (kb, sb).
func keysetPosCompare(ka any, sa string, kb any, sb string, desc bool) int {
	c := compareValues(ka, kb)
	if c == 0 {
		c = strings.Compare(sa, sb)
	}
	if desc {
		c = -c
	}
	return c
}

// sortRows sorts rows in the order of the merge mode.
func sortRows(rows []*mergeRow, mode MergeMode, desc bool) {
	switch mode {
	case MergeTopK:
		sort.SliceStable(rows, func(i, j int) bool { return topKBefore(rows[i], rows[j], desc) })
	case MergeKeyset:
		sort.SliceStable(rows, func(i, j int) bool { return keysetCompare(rows[i], rows[j], desc) < 0 })
	}
}

// cursorVersion is the format of a keyset cursor; a cursor of another
// format is refused as malformed.
const cursorVersion = 1

// maxCursorLen bounds the cursor a client sends.
const maxCursorLen = 256 << 10

// keysetCursor is what a keyset cursor carries, base64url-encoded JSON:
// the position of the last row of the page and the identity of the request
// that made it.
type keysetCursor struct {
	Version  int    `json:"v"`
	Identity string `json:"h"`
	Shard    string `json:"s"`
	Type     string `json:"t"`
	Value    string `json:"x,omitempty"`
}

// cursorPos is a decoded keyset position: rows strictly after it follow.
type cursorPos struct {
	key   any
	shard string
}

func encodeCursor(identity string, last *mergeRow) (string, error) {
	tag, text, ok := encodeValue(last.key)
	if !ok {
		return "", api.Errorf(codes.Internal, "internal error: shard %s returned an order_by value of type %T, which a cursor cannot carry", last.shard, last.key)
	}
	raw, err := json.Marshal(keysetCursor{Version: cursorVersion, Identity: identity, Shard: last.shard, Type: tag, Value: text})
	if err != nil {
		return "", api.Errorf(codes.Internal, "internal error: encoding a cursor: %v", err)
	}
	return base64.RawURLEncoding.EncodeToString(raw), nil
}

// decodeCursor decodes a cursor and checks that it was made by a request
// with the same identity.
func decodeCursor(s, identity string) (*cursorPos, error) {
	malformed := func() error {
		return api.New(codes.InvalidArgument, "cursor is malformed: pass the next_cursor of the previous page unchanged, or no cursor for the first page")
	}
	if len(s) > maxCursorLen {
		return nil, malformed()
	}
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, malformed()
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var c keysetCursor
	if err := dec.Decode(&c); err != nil || dec.More() || c.Version != cursorVersion || c.Shard == "" {
		return nil, malformed()
	}
	key, ok := decodeValue(c.Type, c.Value)
	if !ok {
		return nil, malformed()
	}
	if c.Identity != identity {
		return nil, api.New(codes.InvalidArgument, "cursor belongs to a different fan-out (its function, args, shards, order_by or desc differ): start again without a cursor")
	}
	return &cursorPos{key: key, shard: c.Shard}, nil
}

// encodeValue writes a value as a type tag and an exact text.
func encodeValue(v any) (tag, text string, ok bool) {
	switch x := v.(type) {
	case nil:
		return "n", "", true
	case int64:
		return "i", strconv.FormatInt(x, 10), true
	case int:
		return "i", strconv.Itoa(x), true
	case float64:
		return "r", strconv.FormatFloat(x, 'g', -1, 64), true
	case string:
		return "t", x, true
	case []byte:
		return "b", base64.StdEncoding.EncodeToString(x), true
	case bool:
		return "o", strconv.FormatBool(x), true
	}
	return "", "", false
}

func decodeValue(tag, text string) (any, bool) {
	switch tag {
	case "n":
		return nil, text == ""
	case "i":
		i, err := strconv.ParseInt(text, 10, 64)
		return i, err == nil
	case "r":
		f, err := strconv.ParseFloat(text, 64)
		return f, err == nil
	case "t":
		return text, true
	case "b":
		b, err := base64.StdEncoding.DecodeString(text)
		if b == nil {
			b = []byte{}
		}
		return b, err == nil
	case "o":
		b, err := strconv.ParseBool(text)
		return b, err == nil
	}
	return nil, false
}

// fanOutIdentity hashes what makes two fan-outs the same read for a keyset
// cursor: the function, its bound arguments (the shard key excluded), the
// shards, order_by and desc. The page size may change between pages.
func fanOutIdentity(function string, args map[string]any, shards string, orderBy string, desc bool) string {
	h := sha256.New()
	put := func(s string) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	put("lunora fan-out v1")
	put(function)
	put(shards)
	put(orderBy)
	put(strconv.FormatBool(desc))
	names := make([]string, 0, len(args))
	for name := range args {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		tag, text, ok := encodeValue(args[name])
		if !ok {
			tag, text = "?", fmt.Sprintf("%T %v", args[name], args[name])
		}
		put(name)
		put(tag)
		put(text)
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}
