package placement_test

import (
	"strings"
	"testing"
)

// TestGoldenOwners pins placement across processes, Go versions and CPU
// architectures: the expectations were computed once and committed. Every
// gateway and node must agree on them, so if this test fails the hash or
// the order changed and a running cluster would re-place its shards. Do not
// update the table to make it pass; restore the function that changed.
func TestGoldenOwners(t *testing.T) {
	rings := [3]string{
		"n1 n2 n3 n4 n5",
		"n1 n2:2 n3:3 n4 n5:5",
		"a b c d e f g h i j k l m n o p q r s t u v w x y z aa ab ac ad ae af",
	}
	golden := []struct {
		id   string
		want [3]string // Preference(id, 3) on each ring
	}{
		{"room_id=r0", [3]string{"n5 n2 n4", "n5 n2 n3", "q z d"}},
		{"room_id=r1", [3]string{"n2 n1 n4", "n2 n1 n5", "s h l"}},
		{"room_id=r2", [3]string{"n3 n4 n2", "n3 n2 n4", "ae o f"}},
		{"room_id=r3", [3]string{"n1 n4 n5", "n1 n4 n5", "u v q"}},
		{"room_id=r4", [3]string{"n1 n2 n3", "n5 n1 n2", "u ab d"}},
		{"room_id=r5", [3]string{"n5 n4 n2", "n5 n2 n4", "l ab n"}},
		{"room_id=r6", [3]string{"n4 n1 n5", "n5 n4 n3", "c d g"}},
		{"room_id=r7", [3]string{"n4 n5 n2", "n4 n5 n2", "ac q z"}},
		{"room_id=r42", [3]string{"n3 n1 n5", "n3 n5 n2", "u q p"}},
		{"room_id=r1000000", [3]string{"n2 n1 n4", "n2 n1 n5", "x f s"}},
		{"user_id=u-7f3a", [3]string{"n3 n5 n1", "n3 n5 n2", "h z o"}},
		{"tenant=acme", [3]string{"n1 n2 n3", "n1 n2 n3", "l u r"}},
		{"__root__", [3]string{"n1 n4 n2", "n5 n2 n1", "h e w"}},
		{"", [3]string{"n5 n4 n3", "n5 n3 n4", "k i c"}},
		{"city=Zürich", [3]string{"n4 n3 n2", "n3 n4 n5", "k s g"}},
	}
	for k, spec := range rings {
		r := mustRing(t, spec)
		for _, g := range golden {
			var got []string
			for _, id := range r.Preference(g.id, 3) {
				got = append(got, string(id))
			}
			if s := strings.Join(got, " "); s != g.want[k] {
				t.Errorf("ring %q: Preference(%q, 3) = %s, want %s", spec, g.id, s, g.want[k])
			}
			if owner := string(r.Owner(g.id)); owner != got[0] {
				t.Errorf("ring %q: Owner(%q) = %s, Preference starts with %s", spec, g.id, owner, got[0])
			}
		}
	}
}
