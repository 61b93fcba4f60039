package cli

import (
	"flag"
	"io"
	"slices"
	"testing"
)

func TestParseInterspersed(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		limit int
		pos   []string
	}{
		{[]string{"q", "-limit", "5"}, 5, []string{"q"}},
		{[]string{"-limit", "5", "q", "a", "b"}, 5, []string{"q", "a", "b"}},
		{[]string{"q", "a", "-limit=7", "b"}, 7, []string{"q", "a", "b"}},
		{[]string{"q", "--", "-limit", "5"}, 1, []string{"q", "-limit", "5"}},
		{nil, 1, nil},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		limit := fs.Int("limit", 1, "")
		pos, err := ParseInterspersed(fs, tc.args)
		if err != nil || *limit != tc.limit || !slices.Equal(pos, tc.pos) {
			t.Errorf("%q: limit %d, positional %q, %v; want %d, %q", tc.args, *limit, pos, err, tc.limit, tc.pos)
		}
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if _, err := ParseInterspersed(fs, []string{"q", "-nope"}); err == nil {
		t.Error("an unknown flag after a positional argument was accepted")
	}
}
