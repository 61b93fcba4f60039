package schema_test

import (
	"os"
	"strings"
	"testing"

	"github.com/lunora/lunora/schema"
)

// TestReadmeReferenceParses: the example in README.md's lunora.yaml
// reference is a valid file, so the documentation cannot drift from the
// parser.
func TestReadmeReferenceParses(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "## `lunora.yaml` reference")
	if i < 0 {
		t.Fatal("README.md has no \"## `lunora.yaml` reference\" section")
	}
	s = s[i:]
	j := strings.Index(s, "```yaml\n")
	if j < 0 {
		t.Fatal("the reference section has no yaml block")
	}
	s = s[j+len("```yaml\n"):]
	k := strings.Index(s, "```")
	app, err := schema.Parse("README.md", []byte(s[:k]))
	if err != nil {
		t.Fatal(err)
	}
	if a := app.Function("messages:edit").Auth; a == nil || a.ShardKeyClaim != "rooms" || !a.Allows("client") {
		t.Fatalf("messages:edit auth = %+v", a)
	}
}
