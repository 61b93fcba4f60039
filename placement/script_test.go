package placement_test

import (
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/lunora/lunora/placement"
)

var update = flag.Bool("update", false, "rewrite the expected output in testdata/*.txt")

// TestScripts runs the scripts in testdata/*.txt. A script is a sequence of
// stanzas:
//
//	# comments and blank lines between stanzas
//	command arg...
//	----
//	expected output, one or more lines,
//	up to the next blank line or the end of the file
//
// Commands (a ring starts empty; each change keeps the ring before it, for
// show-moves):
//
//	add-node <id> [weight]       add a node (weight 1 by default)
//	remove-node <id>             remove a node
//	set-weight <id> <weight>     change a node's weight
//	show-ring                    the members
//	show-owners <shard>...       the owner of each shard
//	show-preference <n> <shard>... the first n nodes of each shard's preference list
//	show-moves <count> <seed>    shards moved between the previous ring and this
//	                             one, over count pseudo-random shard IDs, by route
//	show-balance <count> <seed>  shards per node over count pseudo-random shard IDs
//
// A change prints the new ring, or "error: ..." and leaves the ring as it
// was. go test ./placement/ -run TestScripts -update rewrites the expected
// output from what the commands print; review the diff.
func TestScripts(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.txt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts in testdata: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) { runScript(t, file) })
	}
}

type stanza struct {
	pre      []string // comments and blank lines before the command
	line     int      // of the command, 1-based
	cmd      string
	expected []string
}

func runScript(t *testing.T, file string) {
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	stanzas, tail := parseScript(t, file, string(data))
	var s scriptState
	var out strings.Builder
	for _, st := range stanzas {
		got := s.run(st.cmd)
		if !*update && !slices.Equal(got, st.expected) {
			t.Errorf("%s:%d: %s\ngot:\n\t%s\nwant:\n\t%s", file, st.line, st.cmd,
				strings.Join(got, "\n\t"), strings.Join(st.expected, "\n\t"))
		}
		for _, l := range st.pre {
			out.WriteString(l + "\n")
		}
		out.WriteString(st.cmd + "\n----\n")
		for _, l := range got {
			out.WriteString(l + "\n")
		}
	}
	for _, l := range tail {
		out.WriteString(l + "\n")
	}
	if *update && out.String() != string(data) {
		if err := os.WriteFile(file, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("rewrote %s", file)
	}
}

func parseScript(t *testing.T, file, data string) (stanzas []stanza, tail []string) {
	lines := strings.Split(strings.TrimSuffix(data, "\n"), "\n")
	var pre []string
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if strings.TrimSpace(l) == "" || strings.HasPrefix(l, "#") {
			pre = append(pre, l)
			continue
		}
		st := stanza{pre: pre, line: i + 1, cmd: l}
		pre = nil
		if i+1 >= len(lines) || lines[i+1] != "----" {
			t.Fatalf("%s:%d: want ---- after the command %q", file, i+1, l)
		}
		i += 2
		for ; i < len(lines) && strings.TrimSpace(lines[i]) != ""; i++ {
			st.expected = append(st.expected, lines[i])
		}
		i-- // the blank line, if any, belongs to the next stanza's preamble
		stanzas = append(stanzas, st)
	}
	return stanzas, pre
}

type scriptState struct {
	prev, cur *placement.Ring
}

func (s *scriptState) run(cmdline string) []string {
	f := strings.Fields(cmdline)
	cmd, args := f[0], f[1:]
	switch cmd {
	case "add-node", "remove-node", "set-weight":
		ms, err := s.changed(cmd, args)
		if err != nil {
			return []string{"error: " + err.Error()}
		}
		r, err := placement.NewRing(ms)
		if err != nil {
			return []string{"error: " + err.Error()}
		}
		s.prev, s.cur = s.cur, r
		return []string{ringString(r)}
	}
	if s.cur == nil {
		return []string{"error: no ring yet"}
	}
	switch cmd {
	case "show-ring":
		return []string{ringString(s.cur)}
	case "show-owners":
		var out []string
		for _, id := range args {
			out = append(out, fmt.Sprintf("%s -> %s", id, s.cur.Owner(id)))
		}
		return out
	case "show-preference":
		if len(args) < 1 {
			return []string{"error: usage: show-preference <n> <shard>..."}
		}
		n, err := strconv.Atoi(args[0])
		if err != nil {
			return []string{"error: " + err.Error()}
		}
		var out []string
		for _, id := range args[1:] {
			out = append(out, fmt.Sprintf("%s -> %s", id, joinIDs(s.cur.Preference(id, n))))
		}
		return out
	case "show-moves":
		ids, err := scriptIDs(args)
		if err != nil {
			return []string{"error: usage: show-moves <count> <seed>: " + err.Error()}
		}
		if s.prev == nil {
			return []string{"error: no previous ring"}
		}
		return showMoves(s.prev, s.cur, ids)
	case "show-balance":
		ids, err := scriptIDs(args)
		if err != nil {
			return []string{"error: usage: show-balance <count> <seed>: " + err.Error()}
		}
		return showBalance(s.cur, ids)
	}
	return []string{fmt.Sprintf("error: unknown command %q", cmd)}
}

// changed returns the current members with one change applied.
func (s *scriptState) changed(cmd string, args []string) ([]placement.Member, error) {
	var ms []placement.Member
	if s.cur != nil {
		ms = s.cur.Members()
	}
	switch {
	case cmd == "add-node" && (len(args) == 1 || len(args) == 2):
	case cmd == "remove-node" && len(args) == 1:
	case cmd == "set-weight" && len(args) == 2:
	default:
		return nil, fmt.Errorf("usage: add-node <id> [weight] | remove-node <id> | set-weight <id> <weight>")
	}
	id := placement.NodeID(args[0])
	weight := 1
	if len(args) == 2 {
		w, err := strconv.Atoi(args[1])
		if err != nil {
			return nil, err
		}
		weight = w
	}
	i := slices.IndexFunc(ms, func(m placement.Member) bool { return m.ID == id })
	switch {
	case cmd == "add-node":
		// Duplicates are left to NewRing to reject.
		return append(ms, placement.Member{ID: id, Weight: weight}), nil
	case i < 0:
		return nil, fmt.Errorf("no node %q in the ring", id)
	case cmd == "remove-node":
		return slices.Delete(ms, i, i+1), nil
	default:
		ms[i].Weight = weight
		return ms, nil
	}
}

// scriptIDs generates count shard IDs "room_id=r<n>" from a PCG seeded with
// seed (the generator's output is specified, so the IDs are stable).
func scriptIDs(args []string) ([]string, error) {
	if len(args) != 2 {
		return nil, fmt.Errorf("want 2 arguments, have %d", len(args))
	}
	count, err := strconv.Atoi(args[0])
	if err != nil {
		return nil, err
	}
	seed, err := strconv.ParseUint(args[1], 10, 64)
	if err != nil {
		return nil, err
	}
	src := rand.NewPCG(seed, seed)
	ids := make([]string, count)
	for i := range ids {
		ids[i] = fmt.Sprintf("room_id=r%d", src.Uint64()%1_000_000_000)
	}
	return ids, nil
}

func showMoves(from, to *placement.Ring, ids []string) []string {
	moves := placement.Plan(from, to, ids)
	routes := map[string]int{}
	for _, m := range moves {
		routes[fmt.Sprintf("%s -> %s", m.From, m.To)]++
	}
	out := []string{fmt.Sprintf("moved %d of %d (%s), minimum %s",
		len(moves), len(ids), percent(len(moves), len(ids)), percentF(minimumMoveFraction(from, to)))}
	for _, r := range slices.Sorted(maps.Keys(routes)) {
		out = append(out, fmt.Sprintf("  %s: %d", r, routes[r]))
	}
	return out
}

func showBalance(r *placement.Ring, ids []string) []string {
	count := map[placement.NodeID]int{}
	for _, id := range ids {
		count[r.Owner(id)]++
	}
	total := 0
	for _, m := range r.Members() {
		total += m.Weight
	}
	var out []string
	worst := 0.0
	for _, m := range r.Members() {
		want := float64(m.Weight) / float64(total)
		worst = max(worst, float64(count[m.ID])/(want*float64(len(ids))))
		out = append(out, fmt.Sprintf("%s: %d (%s), expected %s", m.ID, count[m.ID], percent(count[m.ID], len(ids)), percentF(want)))
	}
	return append(out, fmt.Sprintf("max/expected %.3f", worst))
}

func ringString(r *placement.Ring) string {
	var b strings.Builder
	b.WriteString("ring:")
	for _, m := range r.Members() {
		fmt.Fprintf(&b, " %s:%d", m.ID, m.Weight)
	}
	return b.String()
}

func joinIDs(ids []placement.NodeID) string {
	if len(ids) == 0 {
		return "(none)"
	}
	var s []string
	for _, id := range ids {
		s = append(s, string(id))
	}
	return strings.Join(s, " ")
}

func percent(n, of int) string  { return percentF(float64(n) / float64(of)) }
func percentF(f float64) string { return fmt.Sprintf("%.2f%%", 100*f) }
