package blob_test

import (
	"testing"

	"github.com/lunora/lunora/blob"
	"github.com/lunora/lunora/blob/blobtest"
)

func TestLocalStore(t *testing.T) {
	s, err := blob.OpenLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	blobtest.Conformance(t, s)
}

// TestLocalStoreCleansTemp: temporary files a crash left are removed when
// the directory is opened again.
func TestLocalStoreCleansTemp(t *testing.T) {
	dir := t.TempDir()
	if _, err := blob.OpenLocal(dir); err != nil {
		t.Fatal(err)
	}
	leftover := dir + "/tmp/put-123"
	if err := writeFile(leftover, "half"); err != nil {
		t.Fatal(err)
	}
	if _, err := blob.OpenLocal(dir); err != nil {
		t.Fatal(err)
	}
	if fileExists(leftover) {
		t.Fatal("OpenLocal kept a temporary file")
	}
}
