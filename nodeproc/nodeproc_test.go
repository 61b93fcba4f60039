package nodeproc_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/lunora/lunora/nodeproc"
	"github.com/lunora/lunora/schema"
)

func TestWallClockGlobalFunctionRefusedAtStart(t *testing.T) {
	app, err := schema.Parse("app.yaml", []byte(`tables:
  users:
    global: true
    columns: {id: text, at: text}
    primary_key: [id]
functions:
  users:touch:
    kind: mutation
    global: true
    args: {id: text}
    sql:
      - UPDATE users SET at = datetime('now') WHERE id = :id
`))
	if err != nil {
		t.Fatal(err)
	}
	_, err = nodeproc.Start(nodeproc.Config{App: app, Dir: t.TempDir(), NodeID: "n1", GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0"})
	var le *schema.LineError
	if !errors.As(err, &le) || le.Line != 7 || !strings.Contains(err.Error(), "lunora_now") || !strings.HasPrefix(err.Error(), "app.yaml:7:") {
		t.Fatalf("want app.yaml:7 refusing datetime('now'), got %v", err)
	}
}
