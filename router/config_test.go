package router

import (
	"testing"
	"time"

	"github.com/lunora/lunora/schema"
)

const configTestSchema = `
tables:
  items:
    shard_by: k
    columns: {k: text, id: int}
    primary_key: [id]
functions:
  items:list:
    kind: query
    shard_by: k
    args: {k: text}
    sql:
      - SELECT id FROM items ORDER BY id
`

func TestConfigDefaultsAndValidate(t *testing.T) {
	app, err := schema.Parse("lunora.yaml", []byte(configTestSchema))
	if err != nil {
		t.Fatal(err)
	}
	def := DefaultConfig()
	if def.ConnsPerNode != 2 || def.MaxAttempts != 8 || def.RingRefresh != time.Second {
		t.Fatalf("DefaultConfig: %+v", def)
	}
	// Zero fields take the defaults in New.
	r, err := New(Config{App: app, Seeds: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	if r.cfg.ConnsPerNode != 2 || r.cfg.MaxAttempts != 8 || r.cfg.RingRefresh != time.Second {
		t.Fatalf("New filled %+v", r.cfg)
	}
	for name, c := range map[string]Config{
		"no app":           {Seeds: []string{"x"}},
		"no seeds":         {App: app},
		"negative conns":   {App: app, Seeds: []string{"x"}, ConnsPerNode: -1},
		"negative tries":   {App: app, Seeds: []string{"x"}, MaxAttempts: -1},
		"negative refresh": {App: app, Seeds: []string{"x"}, RingRefresh: -time.Second},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("%s: New accepted %+v", name, c)
		}
		if err := c.withDefaults().Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, c)
		}
	}
}
