package main

import (
	"context"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/lunora/lunora/raftglobal"
)

func podEnv(name string, extra ...string) func(string) string {
	env := map[string]string{
		"LUNORA_K8S_SERVICE": "lunora-node",
		"POD_NAME":           name,
		"POD_NAMESPACE":      "lunora",
		"POD_IP":             "10.244.0.7",
	}
	for i := 0; i+1 < len(extra); i += 2 {
		env[extra[i]] = extra[i+1]
	}
	return func(k string) string { return env[k] }
}

var manifestArgs = []string{"serve", "-schema=/etc/lunora/lunora.yaml", "-data=/var/lib/lunora",
	"-grpc-addr=:7070", "-http-addr=:7071", "-raft-addr=:7072", "-gossip-addr=:7073"}

func TestKubernetesArgsVoter(t *testing.T) {
	args, p, err := kubernetesArgs(manifestArgs, podEnv("lunora-node-1"))
	if err != nil {
		t.Fatal(err)
	}
	if p.statefulSet != "lunora-node" || p.ordinal != 1 || p.namespace != "lunora" {
		t.Fatalf("pod = %+v", p)
	}
	o, err := parseFlags(args, io.Discard)
	if err != nil {
		t.Fatalf("parseFlags(%q): %v", args, err)
	}
	if o.nodeID != "lunora-node-1" || o.grpcAdvertise != "10.244.0.7:7070" ||
		o.raftAdvertise != "10.244.0.7:7072" || o.gossipAdv != "10.244.0.7:7073" {
		t.Fatalf("identity: id=%q grpc=%q raft=%q gossip=%q", o.nodeID, o.grpcAdvertise, o.raftAdvertise, o.gossipAdv)
	}
	want := []raftglobal.Server{
		{ID: "lunora-node-0", Addr: "lunora-node-0.lunora-node:7072"},
		{ID: "lunora-node-1", Addr: "lunora-node-1.lunora-node:7072"},
		{ID: "lunora-node-2", Addr: "lunora-node-2.lunora-node:7072"},
	}
	if !reflect.DeepEqual(o.bootstrap, want) || len(o.join) != 0 {
		t.Fatalf("bootstrap %+v join %v", o.bootstrap, o.join)
	}
	if !reflect.DeepEqual(o.gossipSeeds, []string{"lunora-node:7073"}) {
		t.Fatalf("gossip seeds %v", o.gossipSeeds)
	}
	if o.schemaPath != "/etc/lunora/lunora.yaml" || o.raftAddr != ":7072" {
		t.Fatalf("the manifest's own flags were lost: %+v", o)
	}
}

func TestKubernetesArgsNonVoterJoins(t *testing.T) {
	args, _, err := kubernetesArgs(manifestArgs, podEnv("lunora-node-4"))
	if err != nil {
		t.Fatal(err)
	}
	o, err := parseFlags(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.bootstrap) != 0 {
		t.Fatalf("ordinal 4 of 3 voters bootstraps: %+v", o.bootstrap)
	}
	want := []string{"lunora-node-0.lunora-node:7070", "lunora-node-1.lunora-node:7070", "lunora-node-2.lunora-node:7070"}
	if !reflect.DeepEqual(o.join, want) {
		t.Fatalf("join %v, want %v", o.join, want)
	}
}

func TestKubernetesArgsOneVoterAndOverrides(t *testing.T) {
	in := []string{"serve", "-schema", "/app.yaml", "-grpc-addr", ":9000", "-raft-addr=:9002", "-node-id=custom"}
	args, _, err := kubernetesArgs(in, podEnv("db-0", "LUNORA_K8S_VOTERS", "1", "LUNORA_K8S_SERVICE", "db"))
	if err != nil {
		t.Fatal(err)
	}
	o, err := parseFlags(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.nodeID != "custom" {
		t.Fatalf("an explicit -node-id must win, got %q", o.nodeID)
	}
	if o.grpcAdvertise != "10.244.0.7:9000" || o.raftAdvertise != "10.244.0.7:9002" {
		t.Fatalf("ports not taken from the flags: %q %q", o.grpcAdvertise, o.raftAdvertise)
	}
	if !reflect.DeepEqual(o.bootstrap, []raftglobal.Server{{ID: "db-0", Addr: "db-0.db:9002"}}) {
		t.Fatalf("bootstrap %+v", o.bootstrap)
	}
}

func TestKubernetesArgsOffAndErrors(t *testing.T) {
	args, p, err := kubernetesArgs(manifestArgs, func(string) string { return "" })
	if err != nil || p != nil || !reflect.DeepEqual(args, manifestArgs) {
		t.Fatalf("without LUNORA_K8S_SERVICE: %q %v %v", args, p, err)
	}
	for _, env := range []func(string) string{
		podEnv("lunora-node"),                                // no ordinal
		podEnv("lunora-node-x"),                              // not a number
		podEnv("lunora-node-0", "POD_IP", ""),                // no IP
		podEnv("lunora-node-0", "LUNORA_K8S_VOTERS", "zero"), // bad count
		podEnv("lunora-node-0", "LUNORA_K8S_VOTERS", "0"),
	} {
		if _, _, err := kubernetesArgs(manifestArgs, env); err == nil {
			t.Errorf("want an error for POD_NAME=%q POD_IP=%q VOTERS=%q", env("POD_NAME"), env("POD_IP"), env("LUNORA_K8S_VOTERS"))
		}
	}
}

// fakeAPI serves one StatefulSet with the given replica count over TLS and
// points the in-cluster configuration at it.
func fakeAPI(t *testing.T, replicas string, status int) { fakeAPIMeta(t, replicas, status, "{}") }

func fakeAPIMeta(t *testing.T, replicas string, status int, meta string) {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/apis/apps/v1/namespaces/lunora/statefulsets/lunora-node" || r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		w.WriteHeader(status)
		io.WriteString(w, `{"kind":"StatefulSet","metadata":`+meta+`,"spec":{"replicas":`+replicas+`}}`)
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	for name, data := range map[string][]byte{"token": []byte("tok\n"), "ca.crt": ca, "namespace": []byte("lunora")} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	oldDir, oldURL := serviceAccountDir, apiServerURL
	serviceAccountDir, apiServerURL = dir, func() string { return srv.URL }
	t.Cleanup(func() { serviceAccountDir, apiServerURL = oldDir, oldURL })
}

const sigterm = syscall.SIGTERM

func TestStopCause(t *testing.T) {
	nolog := func(string, ...any) {}
	p := &pod{name: "lunora-node-3", namespace: "lunora", statefulSet: "lunora-node", ordinal: 3}

	fakeAPI(t, "3", http.StatusOK) // scaled 5→3: ordinal 3 is going away
	if got := stopCause(sigterm, p, nolog); got != errLeave {
		t.Fatalf("scale-down: %v, want leave", got)
	}
	fakeAPI(t, "5", http.StatusOK) // a restart of a pod still counted
	if got := stopCause(sigterm, p, nolog); got != errKeepRing {
		t.Fatalf("restart: %v, want keep ring", got)
	}
	if got := stopCause(os.Interrupt, p, nolog); got != errKeepRing {
		t.Fatalf("SIGINT: %v, want keep ring", got)
	}
	if got := stopCause(sigterm, nil, nolog); got != errLeave {
		t.Fatalf("outside Kubernetes: %v, want leave", got)
	}
	fakeAPI(t, "5", http.StatusForbidden) // no answer: leave, the safe way
	var logged []string
	got := stopCause(sigterm, p, func(msg string, _ ...any) { logged = append(logged, msg) })
	if got != errLeave || len(logged) != 1 || !strings.Contains(logged[0], "could not read") {
		t.Fatalf("API refused: %v %q, want leave with a warning", got, logged)
	}
	if _, err := p.scaledAway(context.Background()); err == nil {
		t.Fatal("scaledAway: want the API's refusal as an error")
	}
	// The whole StatefulSet going away: stop without leaving.
	fakeAPI(t, "3", http.StatusNotFound)
	if got := stopCause(sigterm, p, nolog); got != errKeepRing {
		t.Fatalf("StatefulSet gone: %v, want keep ring", got)
	}
	fakeAPIMeta(t, "3", http.StatusOK, `{"deletionTimestamp":"2026-11-28T03:50:00Z"}`)
	if got := stopCause(sigterm, p, nolog); got != errKeepRing {
		t.Fatalf("StatefulSet being deleted: %v, want keep ring", got)
	}
}
