package main

import (
	"bytes"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lunora/lunora/gateway"
)

// The limit and CORS flags: defaults, what they set, and refusals naming
// the flag.
func TestLimitFlags(t *testing.T) {
	schemaPath := filepath.Join("..", "..", "examples", "chat", "lunora.yaml")
	base := []string{"-schema", schemaPath, "-node", "127.0.0.1:7070"}

	o, err := parseFlags(base, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c := gateway.DefaultConfig()
	o.applyLimits(&c)
	if c.RateLimit != gateway.DefaultRateLimit || c.RateBurst != gateway.DefaultRateBurst || c.BodyBytesPerSecond != gateway.DefaultBodyBytesPerSecond ||
		c.MaxConcurrentPerClient != gateway.DefaultMaxConcurrentPerClient || c.MaxWebSocketsPerClient != gateway.DefaultMaxWebSocketsPerClient ||
		len(c.CORSOrigins) != 0 || c.SchemaLimits.MaxSQLLen != 64<<10 {
		t.Errorf("defaults: %+v", c)
	}

	o, err = parseFlags(append(base, "-rate-limit", "0", "-max-concurrent-per-client", "8", "-cors-origins", "https://App.example.com/, http://localhost:3000", "-max-sql-bytes", "4096"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	o.applyLimits(&c)
	if c.RateLimit != 0 || c.MaxConcurrentPerClient != 8 || strings.Join(c.CORSOrigins, " ") != "https://app.example.com http://localhost:3000" || c.SchemaLimits.MaxSQLLen != 4096 {
		t.Errorf("set: %+v", c)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-rate-limit", "-1"}, "-rate-limit"},
		{[]string{"-rate-limit-bytes", "-1"}, "-rate-limit-bytes"},
		{[]string{"-max-websockets-per-client", "-2"}, "-max-websockets-per-client"},
		{[]string{"-cors-origins", "app.example.com"}, "-cors-origins"},
		{[]string{"-cors-origins", "*,https://a.example"}, "-cors-origins"},
		{[]string{"-max-sql-bytes", "0"}, "must be positive"},
	} {
		if _, err := parseFlags(append(base, tc.args...), io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error naming %q", tc.args, err, tc.want)
		}
	}

	// -validate checks the schema against the statement bounds.
	o, err = parseFlags(append(base, "-max-function-statements", "1"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := validate(o, &out); err == nil || !strings.Contains(err.Error(), "-max-function-statements") {
		t.Errorf("validate with 1 statement per function: %v", err)
	}
}
