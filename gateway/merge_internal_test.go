package gateway

import (
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/lunora/lunora/api"
	"google.golang.org/grpc/codes"
)

func TestCompareValues(t *testing.T) {
	// Each value is strictly less than the next, SQLite's way.
	ordered := []any{
		nil,
		math.Inf(-1),
		int64(math.MinInt64),
		-1.5,
		int64(-1),
		false,
		0.5,
		true,
		int64(2),
		2.25,
		int64(1 << 53),
		float64(1<<53) + 2, // exactly 2^53+2
		int64(1<<53 + 3),
		int64(math.MaxInt64),
		0x1p63,
		math.Inf(1),
		"",
		"B",
		"a",
		"ab",
		"é",
		[]byte{},
		[]byte{0},
		[]byte("a"),
		struct{}{},
	}
	for i, a := range ordered {
		for j, b := range ordered {
			want := 0
			switch {
			case i < j:
				want = -1
			case i > j:
				want = 1
			}
			if got := compareValues(a, b); got != want {
				t.Errorf("compareValues(%#v, %#v) = %d, want %d", a, b, got, want)
			}
		}
	}
	equal := [][2]any{{int64(3), 3.0}, {true, int64(1)}, {math.NaN(), nil}, {"x", "x"}, {[]byte("x"), []byte("x")}, {int64(-7), -7.0}}
	for _, p := range equal {
		if compareValues(p[0], p[1]) != 0 || compareValues(p[1], p[0]) != 0 {
			t.Errorf("%#v and %#v should compare equal", p[0], p[1])
		}
	}
}

func TestCursorRoundTrip(t *testing.T) {
	id := fanOutIdentity("messages:list", map[string]any{"limit": int64(5)}, "all", "seq", false)
	for _, v := range []any{nil, int64(-42), int64(math.MaxInt64), 3.25, math.Inf(-1), "text with \x00 and é", []byte{0, 1, 255}, []byte{}, true} {
		c, err := encodeCursor(id, &mergeRow{shard: "room_id=r1", key: v})
		if err != nil {
			t.Fatal(err)
		}
		pos, err := decodeCursor(c, id)
		if err != nil {
			t.Fatalf("%#v: %v", v, err)
		}
		if !reflect.DeepEqual(pos.key, v) || pos.shard != "room_id=r1" {
			t.Errorf("%#v came back as %#v on %s", v, pos.key, pos.shard)
		}
		if _, err := decodeCursor(c, "other"); api.CodeOf(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "different") {
			t.Errorf("foreign cursor: %v", err)
		}
	}
	for _, bad := range []string{"", "!!", "e30", strings.Repeat("A", maxCursorLen+1)} {
		if _, err := decodeCursor(bad, id); api.CodeOf(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "malformed") {
			t.Errorf("decodeCursor(%.20q) = %v", bad, err)
		}
	}
}

func TestFanOutIdentity(t *testing.T) {
	base := fanOutIdentity("f", map[string]any{"a": int64(1), "b": "x"}, "keys\x00room_id=1", "seq", false)
	same := fanOutIdentity("f", map[string]any{"b": "x", "a": int64(1)}, "keys\x00room_id=1", "seq", false)
	if base != same {
		t.Error("argument order changed the identity")
	}
	for name, other := range map[string]string{
		"function": fanOutIdentity("g", map[string]any{"a": int64(1), "b": "x"}, "keys\x00room_id=1", "seq", false),
		"arg type": fanOutIdentity("f", map[string]any{"a": "1", "b": "x"}, "keys\x00room_id=1", "seq", false),
		"arg name": fanOutIdentity("f", map[string]any{"a": int64(1), "bb": "x"}, "keys\x00room_id=1", "seq", false),
		"shards":   fanOutIdentity("f", map[string]any{"a": int64(1), "b": "x"}, "all", "seq", false),
		"order_by": fanOutIdentity("f", map[string]any{"a": int64(1), "b": "x"}, "keys\x00room_id=1", "id", false),
		"desc":     fanOutIdentity("f", map[string]any{"a": int64(1), "b": "x"}, "keys\x00room_id=1", "seq", true),
	} {
		if other == base {
			t.Errorf("a different %s kept the identity", name)
		}
	}
}
