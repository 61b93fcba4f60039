package lunoratest

import (
	"slices"
	"testing"
)

func TestParseReady(t *testing.T) {
	r, ok := ParseReady("LUNORA_READY gateway http=127.0.0.1:1 grpc=127.0.0.1:2 node=127.0.0.1:3\n")
	if !ok || r.HTTP() != "127.0.0.1:1" || r.GRPC() != "127.0.0.1:2" || r.Fields["node"] != "127.0.0.1:3" || !slices.Equal(r.Words, []string{"gateway"}) {
		t.Fatalf("ParseReady = %+v, %v", r, ok)
	}
	for _, line := range []string{"", "Lunora dev mode", "  data LUNORA_READY", "LUNORA_READYX http=a"} {
		if _, ok := ParseReady(line); ok {
			t.Errorf("ParseReady(%q) accepted a line that is not a ready line", line)
		}
	}
}

func TestFlags(t *testing.T) {
	args := withLoopbackAddrs([]string{"dev", "--grpc-addr=127.0.0.1:0", "-data", "/d"})
	if v, _ := FlagValue(args, "data"); v != "/d" {
		t.Errorf("data = %q", v)
	}
	if v, _ := FlagValue(args, "http-addr"); v != "127.0.0.1:0" {
		t.Errorf("http-addr = %q, want the added loopback default", v)
	}
	p := &Process{args: args}
	p.pinAddrs(Ready{Fields: map[string]string{"http": "127.0.0.1:5", "grpc": "127.0.0.1:6"}})
	want := []string{"dev", "--grpc-addr=127.0.0.1:6", "-data", "/d", "-http-addr", "127.0.0.1:5"}
	if !slices.Equal(p.args, want) {
		t.Errorf("pinned args = %q, want %q", p.args, want)
	}
	if _, ok := FlagValue([]string{"-data"}, "data"); ok {
		t.Error("a flag without its value has no value")
	}
}
