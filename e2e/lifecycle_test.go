package e2e_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lunora/lunora/lunoratest"
)

// TestInvalidSchemaRefused: lunora-node serve and lunora-gateway refuse an
// invalid lunora.yaml at start, exiting non-zero with file:line.
func TestInvalidSchemaRefused(t *testing.T) {
	t.Parallel()
	b := lunoratest.Build(t)
	cases := []struct {
		name, yaml string
		line       int
		want       string
	}{
		{"unknown type", `tables:
  t:
    shard_by: k
    columns: {k: text, v: integerish}
    primary_key: [k]
`, 4, `unknown type "integerish"`},
		{"statement does not prepare", `tables:
  t:
    shard_by: k
    columns: {k: text, v: int}
    primary_key: [k]
functions:
  f:
    kind: query
    shard_by: k
    args: {k: text}
    sql: [SELECT nope FROM t WHERE k = :k]
`, 7, "no such column: nope"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bad.yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			prefix := "bad.yaml:" + itoa(tc.line) + ":"
			for _, spec := range []lunoratest.Spec{
				lunoratest.NodeSpec(t, b, "serve", "-schema", path),
				lunoratest.GatewaySpec(t, b, path, "127.0.0.1:1"),
			} {
				res := lunoratest.Run(t, spec, 60*time.Second)
				if res.ExitCode == 0 {
					t.Errorf("%s accepted the invalid schema and exited 0", spec.Name)
				}
				if !strings.Contains(res.Stderr, prefix) || !strings.Contains(res.Stderr, tc.want) {
					t.Errorf("%s stderr = %q, want %q and %q", spec.Name, res.Stderr, prefix, tc.want)
				}
				if strings.Contains(res.Stdout, lunoratest.ReadyPrefix) {
					t.Errorf("%s printed %s with an invalid schema", spec.Name, lunoratest.ReadyPrefix)
				}
			}
		})
	}
}

// TestGracefulShutdown: SIGTERM makes each process exit 0 within a bound,
// and a node shut down that way restarts with its data.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	const bound = 15 * time.Second
	b := lunoratest.Build(t)

	dev := lunoratest.Start(t, lunoratest.NodeSpec(t, b, "dev"))
	h := lunoratest.NewHTTPClient(t, dev.HTTPAddr())
	mustHTTP(t, h, "messages:send", map[string]any{"room_id": "r1", "author": "ada", "body": "before SIGTERM"})
	start := time.Now()
	if st := dev.Terminate(bound); st.ExitCode() != 0 {
		t.Fatalf("lunora-node dev exited with %v after SIGTERM, want 0", st)
	}
	t.Logf("lunora-node dev exited 0 %s after SIGTERM", time.Since(start).Round(time.Millisecond))
	dev.Restart()
	h = lunoratest.NewHTTPClient(t, dev.HTTPAddr())
	if got := messagesFromHTTP(t, mustHTTP(t, h, "messages:list", map[string]any{"room_id": "r1"})); len(got) != 1 || got[0].body != "before SIGTERM" {
		t.Fatalf("after a graceful restart room r1 = %+v", got)
	}

	schema := chatSchemaFile(t)
	node := lunoratest.Start(t, lunoratest.NodeSpec(t, b, "serve", "-schema", schema))
	gw := lunoratest.Start(t, lunoratest.GatewaySpec(t, b, schema, node.GRPCAddr()))
	mustHTTP(t, lunoratest.NewHTTPClient(t, gw.HTTPAddr()), "messages:send", map[string]any{"room_id": "r1", "author": "ada", "body": "hi"})
	if st := gw.Terminate(bound); st.ExitCode() != 0 {
		t.Errorf("lunora-gateway exited with %v after SIGTERM, want 0", st)
	}
	if st := node.Terminate(bound); st.ExitCode() != 0 {
		t.Errorf("lunora-node serve exited with %v after SIGTERM, want 0", st)
	}
}
