package check

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// overlays and what each must deploy.
var overlays = map[string]struct {
	nodes, voters int
	gossipSecret  bool // the overlay renders its Secrets, lunora-gossip and lunora-cluster (prod expects the operator's)
	pullNever     bool
}{
	"dev":        {nodes: 1, voters: 1, gossipSecret: true},
	"prod":       {nodes: 3, voters: 3},
	"local-test": {nodes: 3, voters: 3, gossipSecret: true, pullNever: true},
}

// rendered is one overlay's objects, decoded strictly.
type rendered struct {
	nodes    *appsv1.StatefulSet
	gateway  *appsv1.Deployment
	services []*corev1.Service
	pdbs     []*policyv1.PodDisruptionBudget
	hpas     []*autoscalingv2.HorizontalPodAutoscaler
	config   map[string]*corev1.ConfigMap
	secrets  map[string]*corev1.Secret
	accounts map[string]bool
	roles    []*rbacv1.Role
	bindings []*rbacv1.RoleBinding
}

// strict decodes data into obj, refusing unknown fields (yaml.UnmarshalStrict
// goes through JSON with DisallowUnknownFields) and duplicate keys.
func strict(data []byte, obj any) error { return yaml.UnmarshalStrict(data, obj) }

func render(t *testing.T, name string) *rendered {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join("..", "overlays", name))
	if err != nil {
		t.Fatalf("kustomize build overlays/%s: %v", name, err)
	}
	r := &rendered{config: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{}, accounts: map[string]bool{}}
	for _, res := range m.Resources() {
		data, err := res.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		kind, id := res.GetKind(), res.GetKind()+"/"+res.GetName()
		if res.GetKind() != "Namespace" && res.GetNamespace() != "lunora" {
			t.Errorf("%s: namespace %q, want lunora", id, res.GetNamespace())
		}
		var obj any
		switch kind {
		case "Namespace":
			obj = &corev1.Namespace{}
		case "ConfigMap":
			c := &corev1.ConfigMap{}
			r.config[res.GetName()], obj = c, c
		case "Secret":
			s := &corev1.Secret{}
			r.secrets[res.GetName()], obj = s, s
		case "Service":
			s := &corev1.Service{}
			r.services, obj = append(r.services, s), s
		case "ServiceAccount":
			r.accounts[res.GetName()], obj = true, &corev1.ServiceAccount{}
		case "Role":
			x := &rbacv1.Role{}
			r.roles, obj = append(r.roles, x), x
		case "RoleBinding":
			x := &rbacv1.RoleBinding{}
			r.bindings, obj = append(r.bindings, x), x
		case "StatefulSet":
			r.nodes = &appsv1.StatefulSet{}
			obj = r.nodes
		case "Deployment":
			r.gateway = &appsv1.Deployment{}
			obj = r.gateway
		case "PodDisruptionBudget":
			p := &policyv1.PodDisruptionBudget{}
			r.pdbs, obj = append(r.pdbs, p), p
		case "HorizontalPodAutoscaler":
			h := &autoscalingv2.HorizontalPodAutoscaler{}
			r.hpas, obj = append(r.hpas, h), h
		default:
			t.Errorf("%s: a kind this check does not know; add it", id)
			continue
		}
		if err := strict(data, obj); err != nil {
			t.Errorf("%s does not decode strictly: %v", id, err)
		}
	}
	if r.nodes == nil || r.gateway == nil {
		t.Fatalf("overlays/%s: want a StatefulSet and a Deployment", name)
	}
	return r
}

// The strict decoding really refuses an unknown field (a typo in a
// manifest must fail, not vanish).
func TestStrictDecodingRefusesUnknownFields(t *testing.T) {
	bad := []byte("apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: x}\nspec:\n  replica: 3\n")
	if err := strict(bad, &appsv1.StatefulSet{}); err == nil || !strings.Contains(err.Error(), "replica") {
		t.Fatalf("err = %v, want unknown field replica", err)
	}
}

func envValue(t *testing.T, c corev1.Container, name string) string {
	t.Helper()
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func TestOverlays(t *testing.T) {
	for name, want := range overlays {
		t.Run(name, func(t *testing.T) {
			r := render(t, name)
			sts, dep := r.nodes, r.gateway
			if sts.Spec.Replicas == nil || int(*sts.Spec.Replicas) != want.nodes {
				t.Errorf("nodes: replicas %v, want %d", sts.Spec.Replicas, want.nodes)
			}
			node := sts.Spec.Template.Spec.Containers[0]
			if v := envValue(t, node, "LUNORA_K8S_VOTERS"); v != strconv.Itoa(want.voters) {
				t.Errorf("LUNORA_K8S_VOTERS = %q, want %d", v, want.voters)
			}
			if want.voters > want.nodes {
				t.Errorf("%d voters but %d nodes", want.voters, want.nodes)
			}
			if envValue(t, node, "LUNORA_K8S_SERVICE") != sts.Spec.ServiceName {
				t.Errorf("LUNORA_K8S_SERVICE %q is not the StatefulSet's serviceName %q", envValue(t, node, "LUNORA_K8S_SERVICE"), sts.Spec.ServiceName)
			}
			// The pod selectors match the templates.
			checkSelects(t, "StatefulSet", sts.Spec.Selector.MatchLabels, sts.Spec.Template.Labels)
			checkSelects(t, "Deployment", dep.Spec.Selector.MatchLabels, dep.Spec.Template.Labels)
			podLabels := map[string]map[string]string{"node": sts.Spec.Template.Labels, "gateway": dep.Spec.Template.Labels}
			var headless bool
			for _, s := range r.services {
				if !selectsOne(s.Spec.Selector, podLabels) {
					t.Errorf("Service %s selects no pods of this overlay", s.Name)
				}
				if s.Name == sts.Spec.ServiceName {
					headless = s.Spec.ClusterIP == corev1.ClusterIPNone && s.Spec.PublishNotReadyAddresses
				}
			}
			if !headless {
				t.Errorf("the StatefulSet's Service %q must be headless and publish not-ready addresses", sts.Spec.ServiceName)
			}
			for _, p := range r.pdbs {
				sel, err := metaSelector(p.Spec.Selector.MatchLabels)
				if err != nil || !(sel.Matches(labels.Set(sts.Spec.Template.Labels)) || sel.Matches(labels.Set(dep.Spec.Template.Labels))) {
					t.Errorf("PodDisruptionBudget %s selects no pods", p.Name)
				}
				if p.Spec.MinAvailable != nil && p.Spec.MaxUnavailable != nil {
					t.Errorf("PodDisruptionBudget %s sets both minAvailable and maxUnavailable", p.Name)
				}
			}
			for _, h := range r.hpas {
				if h.Spec.ScaleTargetRef.Name != dep.Name || h.Spec.ScaleTargetRef.Kind != "Deployment" {
					t.Errorf("HPA %s targets %s/%s", h.Name, h.Spec.ScaleTargetRef.Kind, h.Spec.ScaleTargetRef.Name)
				}
			}
			if !r.accounts[sts.Spec.Template.Spec.ServiceAccountName] {
				t.Errorf("service account %q is not rendered", sts.Spec.Template.Spec.ServiceAccountName)
			}
			// Every ConfigMap and Secret a pod uses is there (prod's gossip
			// key excepted: the operator creates it).
			for _, spec := range []corev1.PodSpec{sts.Spec.Template.Spec, dep.Spec.Template.Spec} {
				for _, v := range spec.Volumes {
					if v.ConfigMap != nil && r.config[v.ConfigMap.Name] == nil {
						t.Errorf("volume %s: ConfigMap %s is not rendered", v.Name, v.ConfigMap.Name)
					}
					if v.Secret != nil && r.secrets[v.Secret.SecretName] == nil && want.gossipSecret {
						t.Errorf("volume %s: Secret %s is not rendered", v.Name, v.Secret.SecretName)
					}
				}
				for _, c := range spec.Containers {
					for _, e := range c.Env {
						if ref := e.ValueFrom; ref != nil && ref.SecretKeyRef != nil {
							s := r.secrets[ref.SecretKeyRef.Name]
							switch {
							case s == nil && want.gossipSecret:
								t.Errorf("env %s: Secret %s is not rendered", e.Name, ref.SecretKeyRef.Name)
							case s != nil && s.Data[ref.SecretKeyRef.Key] == nil && s.StringData[ref.SecretKeyRef.Key] == "":
								t.Errorf("env %s: Secret %s has no key %s", e.Name, s.Name, ref.SecretKeyRef.Key)
							}
						}
					}
					if want.pullNever && c.ImagePullPolicy != corev1.PullNever {
						t.Errorf("container %s: imagePullPolicy %q, want Never", c.Name, c.ImagePullPolicy)
					}
					sc := c.SecurityContext
					if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
						t.Errorf("container %s: want a read-only root and no privilege escalation", c.Name)
					}
					if c.ReadinessProbe == nil || c.LivenessProbe == nil || c.StartupProbe == nil {
						t.Errorf("container %s: want readiness, liveness and startup probes", c.Name)
					}
				}
				if spec.SecurityContext == nil || spec.SecurityContext.RunAsNonRoot == nil || !*spec.SecurityContext.RunAsNonRoot {
					t.Errorf("pod: want runAsNonRoot")
				}
			}
			// Nodes and gateways have the cluster secret: a file of the
			// lunora-cluster Secret, named by LUNORA_CLUSTER_SECRET_FILE
			// (the CLI run in a node's pod reads it too). (That a node
			// without it would not start is what checkFlags' -validate
			// shows.)
			for _, pod := range []struct {
				kind string
				spec corev1.PodSpec
			}{{"StatefulSet", sts.Spec.Template.Spec}, {"Deployment", dep.Spec.Template.Spec}} {
				if f := secretFile(pod.spec, pod.spec.Containers[0], envValue(t, pod.spec.Containers[0], "LUNORA_CLUSTER_SECRET_FILE")); f != "lunora-cluster/secret" {
					t.Errorf("%s: LUNORA_CLUSTER_SECRET_FILE names %q, want the key secret of the Secret lunora-cluster, mounted", pod.kind, f)
				}
			}
			if s := r.secrets["lunora-cluster"]; s != nil && len(bytes.TrimSpace(s.Data["secret"])) < 32 {
				t.Errorf("Secret lunora-cluster: key secret has %d bytes, want at least 32", len(bytes.TrimSpace(s.Data["secret"])))
			}
			// The grace period covers the leave (-leave-timeout) and the
			// shutdown after it (20 s).
			leave := flagOf(node.Args, "leave-timeout")
			if leave == "" {
				leave = "1m"
			}
			d, err := time.ParseDuration(leave)
			if err != nil {
				t.Fatalf("-leave-timeout %q: %v", leave, err)
			}
			if g := sts.Spec.Template.Spec.TerminationGracePeriodSeconds; g == nil || *g < int64(d.Seconds())+20 {
				t.Errorf("terminationGracePeriodSeconds %v < -leave-timeout %s + 20 s of shutdown", g, leave)
			}
			checkFlags(t, sts, dep, r)
		})
	}
}

func checkSelects(t *testing.T, what string, sel, lbls map[string]string) {
	t.Helper()
	s, err := metaSelector(sel)
	if err != nil || len(sel) == 0 || !s.Matches(labels.Set(lbls)) {
		t.Errorf("%s: selector %v does not match its template's labels %v", what, sel, lbls)
	}
}

func selectsOne(sel map[string]string, pods map[string]map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for _, l := range pods {
		if labels.SelectorFromSet(sel).Matches(labels.Set(l)) {
			return true
		}
	}
	return false
}

func metaSelector(m map[string]string) (labels.Selector, error) {
	if len(m) == 0 {
		return nil, fmt.Errorf("empty selector")
	}
	return labels.SelectorFromSet(m), nil
}

func flagOf(args []string, name string) string {
	val := ""
	for i, a := range args {
		a = strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		if k, v, ok := strings.Cut(a, "="); ok && k == name {
			val = v
		} else if a == name && i+1 < len(args) {
			val = args[i+1]
		}
	}
	return val
}

// --- the flags the manifests start the binaries with exist

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds lunora-node and lunora-gateway from this checkout, or
// takes them from $LUNORA_BIN_DIR (scripts/test builds them once).
func binaries(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("LUNORA_BIN_DIR"); d != "" {
		return d
	}
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "lunora-k8s-check")
		if buildErr != nil {
			return
		}
		root, _ := filepath.Abs(filepath.Join("..", "..", ".."))
		cmd := exec.Command("go", "build", "-o", binDir+"/", "./cmd/lunora-node", "./cmd/lunora-gateway")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// podEnv is the environment Kubernetes gives container c of a pod named
// podName: literal values, the downward API fields the manifests use, and
// Secret keys (a valid test key where the Secret is the operator's).
func podEnv(t *testing.T, c corev1.Container, podName string, r *rendered) map[string]string {
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = varRef.ReplaceAllStringFunc(e.Value, func(m string) string { return env[m[2:len(m)-1]] })
		case e.ValueFrom.FieldRef != nil:
			switch e.ValueFrom.FieldRef.FieldPath {
			case "metadata.name":
				env[e.Name] = podName
			case "metadata.namespace":
				env[e.Name] = "lunora"
			case "status.podIP":
				env[e.Name] = "10.244.0.9"
			default:
				t.Errorf("env %s: field %s not known to this check", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
		case e.ValueFrom.SecretKeyRef != nil:
			env[e.Name] = "bHVub3JhLWNoZWNrLWdvc3NpcC1rZXktMDEyMzQ1Njc="
			if s := r.secrets[e.ValueFrom.SecretKeyRef.Name]; s != nil {
				env[e.Name] = string(s.Data[e.ValueFrom.SecretKeyRef.Key])
			}
		default:
			t.Errorf("env %s: a source this check does not know", e.Name)
		}
	}
	return env
}

// expand is Kubernetes' $(VAR) expansion of args.
func expand(args []string, env map[string]string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = varRef.ReplaceAllStringFunc(a, func(m string) string {
			if v, ok := env[m[2:len(m)-1]]; ok {
				return v
			}
			return m
		})
	}
	return out
}

// runFlags starts bin with the container's args and "-validate" appended:
// the binary parses every argument (an unknown flag or a bad value is an
// error, exit 2), derives its configuration from the pod's env as it would
// in the pod, loads the app's schema and validates everything it would
// start with, then exits 0 without listening, opening its data or joining.
func runFlags(t *testing.T, bin string, args []string, env map[string]string) {
	t.Helper()
	cmd := exec.Command(bin, append(slices.Clone(args), "-validate")...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir()}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		lines := strings.SplitN(stderr.String(), "\n", 3)
		t.Errorf("%s %s: %v: %s", filepath.Base(bin), strings.Join(args, " "), err, strings.Join(lines[:min(2, len(lines))], " | "))
	}
}

// mountConfigMaps writes the ConfigMaps and Secrets container c mounts
// (as rendered; a test value for a Secret the operator creates) into
// temporary directories and returns args with each mount path replaced by
// its directory, so -schema=/etc/lunora/lunora.yaml names the overlay's
// own lunora.yaml; env's values get the same replacement.
func mountConfigMaps(t *testing.T, spec corev1.PodSpec, c corev1.Container, args []string, env map[string]string, r *rendered) []string {
	t.Helper()
	out := slices.Clone(args)
	for _, m := range c.VolumeMounts {
		for _, v := range spec.Volumes {
			if v.Name != m.Name || (v.ConfigMap == nil && v.Secret == nil) {
				continue
			}
			files := map[string][]byte{}
			switch {
			case v.ConfigMap != nil:
				cm := r.config[v.ConfigMap.Name]
				if cm == nil {
					t.Fatalf("volume %s: ConfigMap %s is not rendered", v.Name, v.ConfigMap.Name)
				}
				for name, data := range cm.Data {
					files[name] = []byte(data)
				}
			case r.secrets[v.Secret.SecretName] != nil:
				for name, data := range r.secrets[v.Secret.SecretName].Data {
					files[name] = data
				}
			default: // the operator's (prod)
				files["secret"] = []byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n")
			}
			dir := t.TempDir()
			for name, data := range files {
				if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			from, to := strings.TrimSuffix(m.MountPath, "/")+"/", dir+"/"
			for i := range out {
				out[i] = strings.ReplaceAll(out[i], from, to)
			}
			for k, val := range env {
				env[k] = strings.ReplaceAll(val, from, to)
			}
		}
	}
	return out
}

// secretFile is "SECRET/KEY" when path is the file of key KEY of Secret
// SECRET mounted in container c, "" otherwise.
func secretFile(spec corev1.PodSpec, c corev1.Container, path string) string {
	for _, m := range c.VolumeMounts {
		dir := strings.TrimSuffix(m.MountPath, "/") + "/"
		if !strings.HasPrefix(path, dir) {
			continue
		}
		for _, v := range spec.Volumes {
			if v.Name == m.Name && v.Secret != nil {
				return v.Secret.SecretName + "/" + strings.TrimPrefix(path, dir)
			}
		}
	}
	return ""
}

func checkFlags(t *testing.T, sts *appsv1.StatefulSet, dep *appsv1.Deployment, r *rendered) {
	dir := binaries(t)
	node := sts.Spec.Template.Spec.Containers[0]
	// Each ordinal: a voter and, where the overlay has more nodes than
	// voters, a non-voter (a different set of derived flags).
	for _, ord := range []int{0, int(*sts.Spec.Replicas) + 1} {
		pod := fmt.Sprintf("%s-%d", sts.Name, ord)
		env := podEnv(t, node, pod, r)
		args := mountConfigMaps(t, sts.Spec.Template.Spec, node, expand(append(slices.Clone(node.Command), node.Args...), env), env, r)
		runFlags(t, filepath.Join(dir, "lunora-node"), args, env)
	}
	gw := dep.Spec.Template.Spec.Containers[0]
	env := podEnv(t, gw, dep.Name+"-abc12-xyz34", r)
	runFlags(t, filepath.Join(dir, "lunora-gateway"), mountConfigMaps(t, dep.Spec.Template.Spec, gw, expand(append(slices.Clone(gw.Command), gw.Args...), env), env, r), env)

	// The check itself fails on a flag the binary lacks.
	t.Run("unknown flag fails", func(t *testing.T) {
		cmd := exec.Command(filepath.Join(dir, "lunora-gateway"), "-no-such-flag=1", "-validate")
		if err := cmd.Run(); err == nil {
			t.Fatal("lunora-gateway accepted -no-such-flag")
		}
	})
	// -validate checks more than the flags' syntax: a value only the
	// shard host's configuration refuses, a schema that does not load.
	t.Run("invalid configuration fails", func(t *testing.T) {
		good := filepath.Join("..", "base", "lunora.yaml")
		bad := filepath.Join(t.TempDir(), "lunora.yaml")
		if err := os.WriteFile(bad, []byte("tables: [\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		secret := filepath.Join(t.TempDir(), "secret")
		if err := os.WriteFile(secret, []byte(strings.Repeat("s", 32)), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, args := range [][]string{
			{"serve", "-schema=" + good, "-synchronous=SOMETIMES", "-cluster-secret-file=" + secret},
			{"serve", "-schema=" + bad, "-cluster-secret-file=" + secret},
			// On every interface with no cluster secret (nor mutual TLS).
			{"serve", "-schema=" + good},
		} {
			cmd := exec.Command(filepath.Join(dir, "lunora-node"), append(args, "-validate")...)
			if out, err := cmd.CombinedOutput(); err == nil {
				t.Errorf("lunora-node %v -validate passed: %s", args, out)
			}
		}
		if err := exec.Command(filepath.Join(dir, "lunora-node"), "serve", "-schema="+good, "-cluster-secret-file="+secret, "-validate").Run(); err != nil {
			t.Errorf("lunora-node serve -schema=%s -cluster-secret-file=%s -validate: %v", good, secret, err)
		}
	})
}

// The app the base ships is the example app, byte for byte (the example's
// own tests load and validate it).
func TestBaseAppIsTheExample(t *testing.T) {
	a, err := os.ReadFile(filepath.Join("..", "base", "lunora.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "examples", "chat", "lunora.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatal("deploy/k8s/base/lunora.yaml differs from examples/chat/lunora.yaml: copy it again")
	}
}
