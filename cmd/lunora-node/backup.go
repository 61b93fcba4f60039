package main

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/lunora/lunora/nodeproc"
	"github.com/lunora/lunora/raftglobal"
)

// runBackup is lunora-node backup -http ADDR -out DIR: it asks a running
// node for its backup (GET /admin/backup on the node's -http-addr), writes
// the files under DIR, checks every file against the manifest and prints
// a summary.
func runBackup(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("lunora-node backup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("http", "127.0.0.1:7071", "the node's HTTP (ops) address, its -http-addr")
	out := fs.String("out", "", "directory to write the backup to (created; must be empty)")
	timeout := fs.Duration("timeout", time.Hour, "give up after this long")
	var tlsFlags clusterTLSFlags
	tlsFlags.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() > 0 {
		return errors.New("usage: lunora-node backup -http ADDR -out DIR")
	}
	if err := emptyDir(*out); err != nil {
		return err
	}
	_, hc, scheme, err := tlsFlags.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	start := time.Now()
	m, err := fetchBackup(ctx, hc, scheme+"://"+*addr+nodeproc.BackupPath, *out)
	if err != nil {
		return err
	}
	var bytes int64
	for _, f := range manifestFiles(m) {
		bytes += f.Size
	}
	fmt.Fprintf(stdout, "backup of node %s in %s: global tier at index %d (strong %v), %d shards, %d skipped, ring epoch %d, %d bytes in %v\n",
		m.NodeID, *out, m.Global.Index, m.Global.Strong, len(m.Shards), len(m.Skipped), m.RingEpoch, bytes, time.Since(start).Round(time.Millisecond))
	for _, s := range m.Skipped {
		fmt.Fprintf(stdout, "  skipped %s: %s\n", s.ID, s.Reason)
	}
	return nil
}

func emptyDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	if len(ents) > 0 {
		return fmt.Errorf("%s is not empty", dir)
	}
	return nil
}

// fetchBackup reads the node's tar into dir and checks it.
func fetchBackup(ctx context.Context, hc *http.Client, url, dir string) (*nodeproc.BackupManifest, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	tr := tar.NewReader(resp.Body)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read the backup stream (cut short?): %w", err)
		}
		name := path.Clean(h.Name)
		if h.Typeflag != tar.TypeReg || path.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return nil, fmt.Errorf("unexpected entry %q in the backup stream", h.Name)
		}
		if err := writeFile(filepath.Join(dir, filepath.FromSlash(name)), tr); err != nil {
			return nil, err
		}
	}
	return verifyBackup(dir)
}

func writeFile(p string, r io.Reader) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func manifestFiles(m *nodeproc.BackupManifest) []nodeproc.BackupFile {
	files := []nodeproc.BackupFile{m.Global.BackupFile}
	for _, s := range m.Shards {
		files = append(files, s.BackupFile)
	}
	return files
}

// verifyBackup reads dir/manifest.json and checks that every file it names
// is there with its size and SHA-256.
func verifyBackup(dir string) (*nodeproc.BackupManifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return nil, fmt.Errorf("no manifest (an incomplete backup): %w", err)
	}
	m := &nodeproc.BackupManifest{}
	if err := json.Unmarshal(b, m); err != nil {
		return nil, fmt.Errorf("manifest.json: %w", err)
	}
	if m.Format != nodeproc.BackupFormat {
		return nil, fmt.Errorf("manifest.json: format %d, this lunora-node reads %d", m.Format, nodeproc.BackupFormat)
	}
	for _, f := range manifestFiles(m) {
		name := path.Clean(f.File)
		if f.File == "" || path.IsAbs(name) || strings.HasPrefix(name, "../") {
			return nil, fmt.Errorf("manifest.json: bad file name %q", f.File)
		}
		in, err := os.Open(filepath.Join(dir, filepath.FromSlash(name)))
		if err != nil {
			return nil, err
		}
		sum := sha256.New()
		n, err := io.Copy(sum, in)
		in.Close()
		if err != nil {
			return nil, err
		}
		if n != f.Size || hex.EncodeToString(sum.Sum(nil)) != f.SHA256 {
			return nil, fmt.Errorf("%s: %d bytes with SHA-256 %x, the manifest says %d bytes, %s", f.File, n, sum.Sum(nil), f.Size, f.SHA256)
		}
	}
	return m, nil
}

// runRestore is lunora-node restore -from DIR -data DATA: it checks the
// backup in DIR and makes DATA (new or empty) a data directory that
// lunora-node serve -node-id <the backup's node> starts on: the shard files
// in their places and the global tier seeded from the backup as a one-voter
// group of this node. -verify only checks the backup.
func runRestore(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("lunora-node restore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	from := fs.String("from", "", "the backup directory (lunora-node backup -out)")
	data := fs.String("data", "", "the data directory to create (new or empty)")
	raftAddr := fs.String("raft-advertise", "", "the Raft address the restored node will advertise (default: the one in the backup)")
	verify := fs.Bool("verify", false, "only check the backup's files against its manifest")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *from == "" || fs.NArg() > 0 || (*data == "") != *verify {
		return errors.New("usage: lunora-node restore -from DIR -data NEWDIR [-raft-advertise ADDR] | restore -from DIR -verify")
	}
	m, err := verifyBackup(*from)
	if err != nil {
		return err
	}
	if *verify {
		fmt.Fprintf(stdout, "backup of node %s in %s is whole: global tier at index %d, %d shards, every SHA-256 matches\n", m.NodeID, *from, m.Global.Index, len(m.Shards))
		return nil
	}
	if err := emptyDir(*data); err != nil {
		return err
	}
	for _, s := range m.Shards {
		in, err := os.Open(filepath.Join(*from, filepath.FromSlash(s.File)))
		if err != nil {
			return err
		}
		err = writeFile(filepath.Join(*data, filepath.FromSlash(s.File)), in)
		in.Close()
		if err != nil {
			return fmt.Errorf("shard %s: %w", s.ID, err)
		}
	}
	addr := *raftAddr
	if addr == "" {
		addr = m.RaftAddr
	}
	idx, err := raftglobal.SeedFromBackup(filepath.Join(*data, "raft"), m.NodeID, addr, filepath.Join(*from, filepath.FromSlash(m.Global.File)))
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "restored node %s into %s: %d shards, global tier at index %d as a one-voter group (Raft address %s)\nstart it with: lunora-node serve -node-id %s -data %s -schema ... (no -bootstrap, no -join)\n",
		m.NodeID, *data, len(m.Shards), idx, addr, m.NodeID, *data)
	return nil
}
