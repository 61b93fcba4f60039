package e2e_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lunora/lunora/lunoratest"
)

// freeBase picks a base port for scripts/cluster whose node ports (3
// nodes), gateway gossip port and gateway ports are all free a moment ago.
func freeBase(t *testing.T) (base, gw int) {
	t.Helper()
	for range 50 {
		// Below the kernel's ephemeral range (32768 up by default): a node
		// killed and started again must find its port free, and an
		// outgoing connection elsewhere may take any free ephemeral port.
		base, gw = 20000+10*rand.N(1200), 10000+2*rand.N(4000)
		ports := []int{base + 90, gw, gw + 1}
		for i := 1; i <= 3; i++ {
			for k := 0; k < 4; k++ {
				ports = append(ports, base+10*i+k)
			}
		}
		ok := true
		for _, p := range ports {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				ok = false
				break
			}
			ln.Close()
		}
		if ok {
			return base, gw
		}
	}
	t.Fatal("no free port range for scripts/cluster")
	return 0, 0
}

// TestScriptsCluster (issue 10, deliver 6 and problem 5): scripts/cluster
// on its own ports: up waits for the whole ring (never prints an empty
// one), status names each node's liveness and Raft role, down stops
// gracefully keeping the ring (SIGINT: no leave, so the next up comes
// back at the same epoch with the data), kill-all SIGKILLs.
func TestScriptsCluster(t *testing.T) {
	b := lunoratest.Build(t)
	dir := t.TempDir()
	base, gw := freeBase(t)
	script := filepath.Join(b.ModuleRoot, "scripts", "cluster")
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, script, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "LUNORA_CLUSTER_DIR="+dir+"/c",
			fmt.Sprintf("LUNORA_CLUSTER_PORT=%d", base), fmt.Sprintf("LUNORA_GATEWAY_PORT=%d", gw))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("scripts/cluster %s: %v\n%s", strings.Join(args, " "), err, out.String())
		}
		return out.String()
	}
	t.Cleanup(func() {
		cmd := exec.Command(script, "kill-all")
		cmd.Env = append(os.Environ(), "LUNORA_CLUSTER_DIR="+dir+"/c")
		cmd.Run()
	})
	epochRE := regexp.MustCompile(`ring epoch (\d+): 3 nodes in the ring`)
	rowRE := regexp.MustCompile(`(?m)^n[123]\s+127\.0\.0\.1:(\d+)\s+alive\s+(leader|voter)\s+yes\s`)

	out := run("up", "3")
	m := epochRE.FindStringSubmatch(out)
	if m == nil || len(rowRE.FindAllString(out, -1)) != 3 {
		t.Fatalf("up 3 did not print a ring of 3 live voters:\n%s", out)
	}
	epoch := m[1]
	for _, r := range rowRE.FindAllStringSubmatch(out, -1) {
		var p int
		fmt.Sscan(r[1], &p)
		if p < base+10 || p > base+39 {
			t.Fatalf("node port %d is not from the base %d:\n%s", p, base, out)
		}
	}
	hc := lunoratest.NewHTTPClient(t, fmt.Sprintf("127.0.0.1:%d", gw))
	if resp, err := hc.Call(ctxT(t), "messages:send", map[string]any{"room_id": "r1", "author": "ada", "body": "hi"}); err != nil || resp.Status != 200 {
		t.Fatalf("a write through the gateway on port %d: %v %v", gw, resp, err)
	}

	out = run("down")
	if !strings.Contains(out, "SIGINT") || !strings.Contains(out, "the ring is kept") {
		t.Fatalf("down does not say what it does:\n%s", out)
	}
	for i := 1; i <= 3; i++ {
		log, _ := os.ReadFile(filepath.Join(dir, "c", fmt.Sprintf("n%d.log", i)))
		if !bytes.Contains(log, []byte("stopping without leaving the ring")) || bytes.Contains(log, []byte("leaving the cluster")) {
			t.Fatalf("n%d did not stop without leaving:\n%s", i, log)
		}
	}

	// The same ports (remembered), the same ring, the data.
	out = run("up", "3")
	if m := epochRE.FindStringSubmatch(out); m == nil || m[1] != epoch {
		t.Fatalf("after down and up, want ring epoch %s (no node left):\n%s", epoch, out)
	}
	resp, err := hc.Call(ctxT(t), "messages:list", map[string]any{"room_id": "r1"})
	if err != nil || resp.Status != 200 || len(resp.Result.Rows) != 1 {
		t.Fatalf("the write before down, after up: %v %v", resp, err)
	}

	out = run("kill-all")
	if !strings.Contains(out, "SIGKILL") || strings.Contains(out, "killped") {
		t.Fatalf("kill-all:\n%s", out)
	}
	for _, id := range []string{"n1", "n2", "n3", "gateway"} {
		if _, err := os.Stat(filepath.Join(dir, "c", id+".pid")); err == nil {
			t.Fatalf("%s.pid left after kill-all", id)
		}
	}
}
