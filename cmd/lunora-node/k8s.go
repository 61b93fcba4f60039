package main

// A node in a Kubernetes StatefulSet configures itself from its pod. The
// manifests (deploy/k8s) set LUNORA_K8S_SERVICE to the headless Service's
// name and pass POD_NAME, POD_NAMESPACE and POD_IP from the downward API;
// everything else follows:
//
//   - node ID: the pod name (lunora-node-4);
//   - node-API, Raft and gossip addresses advertised: the pod IP. A pod
//     that restarts gets a new IP and announces it when it starts, so
//     gateways and peers use it at once (a per-pod DNS name would be
//     stable, but gRPC re-resolves names at most every 30 s and a name
//     disappears from DNS while its pod is down);
//   - gossip seeds: the headless Service (all its pods);
//   - the global tier: ordinals below LUNORA_K8S_VOTERS (default 3) are
//     its voters and bootstrap it together; higher ordinals join it through
//     the voters as non-voters.
//
// These are defaults placed before the pod's own arguments, so a flag the
// manifest sets wins. On SIGTERM a pod asks the API server for its
// StatefulSet's replica count: an ordinal at or above it is being scaled
// away and leaves (hands every shard off, leaves the ring); below it the
// pod is being restarted (rolling update, deletion, eviction) and stops
// without leaving, so it comes back to the same ring place with its volume
// and no shard moves. A StatefulSet that is deleted (or being deleted)
// stops its pods without leaving: its volumes are kept. If the API cannot
// be asked, the node leaves: a needless handoff is safer than a volume
// deleted with shards on it.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// pod is this process's place in its StatefulSet.
type pod struct {
	name        string // lunora-node-4
	namespace   string
	statefulSet string // lunora-node
	ordinal     int    // 4
}

// kubernetesArgs returns args with the pod-derived defaults inserted before
// the caller's flags, and the pod; with LUNORA_K8S_SERVICE unset it returns
// args unchanged and a nil pod.
func kubernetesArgs(args []string, getenv func(string) string) ([]string, *pod, error) {
	service := getenv("LUNORA_K8S_SERVICE")
	if service == "" {
		return args, nil, nil
	}
	p := &pod{name: getenv("POD_NAME"), namespace: getenv("POD_NAMESPACE")}
	podIP := getenv("POD_IP")
	if p.name == "" || podIP == "" {
		return nil, nil, errors.New("LUNORA_K8S_SERVICE is set: POD_NAME and POD_IP must be set too (downward API)")
	}
	i := strings.LastIndexByte(p.name, '-')
	ord, err := strconv.Atoi(p.name[i+1:])
	if i <= 0 || err != nil || ord < 0 {
		return nil, nil, fmt.Errorf("POD_NAME %q is not <statefulset>-<ordinal>", p.name)
	}
	p.statefulSet, p.ordinal = p.name[:i], ord
	voters := 3
	if v := getenv("LUNORA_K8S_VOTERS"); v != "" {
		if voters, err = strconv.Atoi(v); err != nil || voters < 1 {
			return nil, nil, fmt.Errorf("LUNORA_K8S_VOTERS %q: want a number of voters, at least 1", v)
		}
	}

	sub := ""
	rest := args
	if len(rest) > 0 && (rest[0] == "serve" || rest[0] == "dev") {
		sub, rest = rest[0], rest[1:]
	}
	grpcPort := portOf(flagValue(rest, "grpc-addr"), "7070")
	raftPort := portOf(flagValue(rest, "raft-addr"), "7072")
	gossipPort := portOf(flagValue(rest, "gossip-addr"), "7073")
	peer := func(ord int, port string) string {
		return net.JoinHostPort(fmt.Sprintf("%s-%d.%s", p.statefulSet, ord, service), port)
	}
	def := []string{
		"-node-id=" + p.name,
		"-grpc-advertise=" + net.JoinHostPort(podIP, grpcPort),
		"-raft-advertise=" + net.JoinHostPort(podIP, raftPort),
		"-gossip-advertise=" + net.JoinHostPort(podIP, gossipPort),
		"-gossip-seeds=" + net.JoinHostPort(service, gossipPort),
	}
	var list []string
	if p.ordinal < voters {
		for v := range voters {
			list = append(list, fmt.Sprintf("%s-%d=%s", p.statefulSet, v, peer(v, raftPort)))
		}
		def = append(def, "-bootstrap="+strings.Join(list, ","))
	} else {
		for v := range voters {
			list = append(list, peer(v, grpcPort))
		}
		def = append(def, "-join="+strings.Join(list, ","))
	}
	out := make([]string, 0, len(args)+len(def)+1)
	if sub != "" {
		out = append(out, sub)
	}
	out = append(out, def...)
	return append(out, rest...), p, nil
}

// flagValue is the value the flag package would end up with for -name in
// args (the last one given), or "".
func flagValue(args []string, name string) string {
	val := ""
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		if !strings.HasPrefix(a, "-") {
			continue
		}
		a = strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		if k, v, ok := strings.Cut(a, "="); ok {
			if k == name {
				val = v
			}
		} else if a == name && i+1 < len(args) {
			val = args[i+1]
			i++
		}
	}
	return val
}

func portOf(addr, def string) string {
	if addr == "" {
		return def
	}
	if _, port, err := net.SplitHostPort(addr); err == nil && port != "" && port != "0" {
		return port
	}
	return def
}

// The in-cluster API server, as every pod finds it.
var (
	serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"
	apiServerURL      = func() string {
		return "https://" + net.JoinHostPort(os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT"))
	}
)

// errSetGone: the StatefulSet is deleted or being deleted. Its pods stop
// without leaving: the volumes stay (whenDeleted: Retain) and a StatefulSet
// created again brings every node back as itself; leaving would only make
// all nodes hand shards to each other at once.
var errSetGone = errors.New("the StatefulSet is deleted or being deleted")

// scaledAway reports whether the StatefulSet no longer counts this pod:
// its ordinal is at or above spec.replicas.
func (p *pod) scaledAway(ctx context.Context) (bool, error) {
	replicas, err := p.replicas(ctx)
	if err != nil {
		return false, err
	}
	return p.ordinal >= replicas, nil
}

func (p *pod) replicas(ctx context.Context) (int, error) {
	token, err := os.ReadFile(serviceAccountDir + "/token")
	if err != nil {
		return 0, fmt.Errorf("service account token: %w", err)
	}
	ns := p.namespace
	if ns == "" {
		b, err := os.ReadFile(serviceAccountDir + "/namespace")
		if err != nil {
			return 0, fmt.Errorf("namespace: %w", err)
		}
		ns = strings.TrimSpace(string(b))
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if ca, err := os.ReadFile(serviceAccountDir + "/ca.crt"); err == nil {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(ca)
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	url := fmt.Sprintf("%s/apis/apps/v1/namespaces/%s/statefulsets/%s", apiServerURL(), ns, p.statefulSet)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return 0, errSetGone
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET statefulset %s/%s: %s", ns, p.statefulSet, resp.Status)
	}
	var sts struct {
		Metadata struct {
			DeletionTimestamp *string `json:"deletionTimestamp"`
		} `json:"metadata"`
		Spec struct {
			Replicas *int `json:"replicas"`
		} `json:"spec"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&sts); err != nil {
		return 0, fmt.Errorf("statefulset %s/%s: %w", ns, p.statefulSet, err)
	}
	if sts.Metadata.DeletionTimestamp != nil {
		return 0, errSetGone
	}
	if sts.Spec.Replicas == nil {
		return 1, nil // the API's default
	}
	return *sts.Spec.Replicas, nil
}

// stopCause is how a node asked to stop by sig stops: SIGINT keeps the
// ring; SIGTERM leaves, except in a StatefulSet pod that is not being
// scaled away (a restart).
func stopCause(sig os.Signal, p *pod, log func(msg string, args ...any)) error {
	if sig == os.Interrupt {
		return errKeepRing
	}
	if p == nil {
		return errLeave
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	away, err := p.scaledAway(ctx)
	switch {
	case errors.Is(err, errSetGone):
		log("SIGTERM: the StatefulSet is being deleted; stopping without leaving (the volumes stay)", "ordinal", p.ordinal)
		return errKeepRing
	case err != nil:
		log("SIGTERM: could not read the StatefulSet's replica count; leaving the cluster", "err", err)
		return errLeave
	case away:
		log("SIGTERM: this pod is being scaled away; leaving the cluster", "ordinal", p.ordinal)
		return errLeave
	default:
		log("SIGTERM: this pod is being restarted; keeping its ring place and data", "ordinal", p.ordinal)
		return errKeepRing
	}
}
