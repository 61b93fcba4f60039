package check

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/yannh/kubeconform/pkg/resource"
	"github.com/yannh/kubeconform/pkg/validator"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// kubernetesVersion is the release whose OpenAPI document the manifests are
// validated against; k8s.io/api in go.mod is its v0 twin.
const kubernetesVersion = "1.37.2"

// swagger returns the OpenAPI (v2) document the k8s.io/kubernetes module
// ships for kubernetesVersion, from the module cache (downloaded through
// the module proxy the first time).
func swagger(t *testing.T) map[string]any {
	t.Helper()
	out, err := exec.Command("go", "mod", "download", "-json", "k8s.io/kubernetes@v"+kubernetesVersion).Output()
	if err != nil {
		t.Fatalf("go mod download k8s.io/kubernetes@v%s: %v", kubernetesVersion, err)
	}
	var mod struct{ Dir, Error string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("go mod download: %s %v", mod.Error, err)
	}
	data, err := os.ReadFile(filepath.Join(mod.Dir, "api", "openapi-spec", "swagger.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

// strictify rewrites an OpenAPI v2 schema into JSON Schema that refuses
// undocumented fields (additionalProperties: false on every object with
// declared properties), as kubeconform's strict schemas do.
func strictify(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = strictify(e)
		}
		if _, ok := x["properties"]; ok {
			if _, set := x["additionalProperties"]; !set {
				x["additionalProperties"] = false
			}
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = strictify(e)
		}
	}
	return v
}

// refs adds to seen every definition name reachable from v.
func refs(v any, defs map[string]any, seen map[string]bool) {
	switch x := v.(type) {
	case map[string]any:
		if r, ok := x["$ref"].(string); ok {
			name := strings.TrimPrefix(r, "#/definitions/")
			if !seen[name] {
				seen[name] = true
				refs(defs[name], defs, seen)
			}
		}
		for _, e := range x {
			refs(e, defs, seen)
		}
	case []any:
		for _, e := range x {
			refs(e, defs, seen)
		}
	}
}

// writeSchemas writes one standalone strict schema per wanted kind
// ("Kind apiVersion"), named as kubeconform looks them up:
// <kind>-<group>-<version>.json (<kind>-<version>.json for the core group).
func writeSchemas(t *testing.T, doc map[string]any, dir string, want map[string]bool) {
	t.Helper()
	defs := doc["definitions"].(map[string]any)
	// Types whose OpenAPI form kubeconform's converter rewrites too.
	defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] = map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}}
	defs["io.k8s.apimachinery.pkg.api.resource.Quantity"] = map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "number"}}}
	strictify(defs)
	found := map[string]bool{}
	for name, d := range defs {
		gvks, _ := d.(map[string]any)["x-kubernetes-group-version-kind"].([]any)
		for _, g := range gvks {
			gvk := g.(map[string]any)
			group, version, kind := gvk["group"].(string), gvk["version"].(string), gvk["kind"].(string)
			apiVersion := version
			if group != "" {
				apiVersion = group + "/" + version
			}
			if !want[kind+" "+apiVersion] {
				continue
			}
			found[kind+" "+apiVersion] = true
			seen := map[string]bool{name: true}
			refs(d, defs, seen)
			sub := map[string]any{}
			for n := range seen {
				sub[n] = defs[n]
			}
			suffix := "-" + version
			if group != "" {
				suffix = "-" + strings.ToLower(strings.Split(group, ".")[0]) + "-" + version
			}
			data, err := json.Marshal(map[string]any{"$ref": "#/definitions/" + name, "definitions": sub})
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, strings.ToLower(kind)+suffix+".json"), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for k := range want {
		if !found[k] {
			t.Errorf("Kubernetes v%s has no %s", kubernetesVersion, k)
		}
	}
}

// TestKubeconformStrict validates every object of every overlay with
// kubeconform in strict mode against schemas generated from the pinned
// Kubernetes release's OpenAPI document: wrong types, unknown fields and
// kinds or API versions that release does not serve fail.
func TestKubeconformStrict(t *testing.T) {
	if testing.Short() {
		t.Skip("needs k8s.io/kubernetes from the module proxy (21 MB, cached)")
	}
	type object struct {
		id   string
		yaml []byte
	}
	var objects []object
	want := map[string]bool{}
	names := make([]string, 0, len(overlays))
	for name := range overlays {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), filepath.Join("..", "overlays", name))
		if err != nil {
			t.Fatalf("overlays/%s: %v", name, err)
		}
		for _, r := range m.Resources() {
			y, err := r.AsYAML()
			if err != nil {
				t.Fatal(err)
			}
			objects = append(objects, object{fmt.Sprintf("overlays/%s %s/%s", name, r.GetKind(), r.GetName()), y})
			want[r.GetKind()+" "+r.GetApiVersion()] = true
		}
	}
	dir := t.TempDir()
	writeSchemas(t, swagger(t), dir, want)
	v, err := validator.New([]string{dir + "/{{ .ResourceKind }}{{ .KindSuffix }}.json"},
		validator.Opts{Strict: true, KubernetesVersion: kubernetesVersion})
	if err != nil {
		t.Fatal(err)
	}
	check := func(id string, y []byte) (validator.Result, bool) {
		res := v.ValidateResource(resource.Resource{Path: id, Bytes: y})
		return res, res.Status == validator.Valid
	}
	for _, o := range objects {
		if res, ok := check(o.id, o.yaml); !ok {
			t.Errorf("%s: status %d: %v %v", o.id, res.Status, res.Err, res.ValidationErrors)
		}
	}
	// The validation bites: an unknown field and a wrong type fail.
	for _, bad := range []string{
		"apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: x}\nspec: {replica: 3, selector: {}, template: {}, serviceName: x}\n",
		"apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: x}\nspec: {maxUnavailable: [1]}\n",
		"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {selector: {}, template: {spec: {containers: [{name: c, image: i, imagePulPolicy: Never}]}}}\n",
		"apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: http}]}\n",
	} {
		if _, ok := check("bad", []byte(bad)); ok {
			t.Errorf("accepted:\n%s", bad)
		}
	}
}
