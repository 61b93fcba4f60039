package nodeproc

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/shardhost"
	"google.golang.org/grpc/codes"
)

// BackupPath is the node's backup endpoint, on its HTTP (ops) listener:
// GET streams a tar of the node's data (see Process.Backup).
const BackupPath = "/admin/backup"

// BackupFormat is the version of the backup's layout and manifest.
const BackupFormat = 1

// BackupManifest describes one node's backup. It is the tar's last entry,
// manifest.json, so a stream cut short has none.
type BackupManifest struct {
	Format    int       `json:"format"`
	NodeID    string    `json:"node_id"`
	RaftAddr  string    `json:"raft_addr"`
	RingEpoch uint64    `json:"ring_epoch"`
	Started   time.Time `json:"started"`
	Finished  time.Time `json:"finished"`
	// Global is the global tier's state machine at Raft index Index.
	// Strong: taken on the leader after a read index, so it holds every
	// global write acknowledged before the backup started; otherwise this
	// replica's applied state.
	Global struct {
		BackupFile
		Index  uint64 `json:"index"`
		Strong bool   `json:"strong"`
	} `json:"global"`
	// Shards are the shards the registry says this node holds, each a
	// consistent copy at commit sequence Seq, taken one after another.
	Shards []BackupShard `json:"shards"`
	// Skipped are registered here but not copied: no file on this node, or
	// handed off during the backup (Reason says which).
	Skipped []BackupSkip `json:"skipped,omitempty"`
}

// BackupFile is one file of a backup: its path in the tar (and, for a
// shard, under the data directory), size and SHA-256.
type BackupFile struct {
	File   string `json:"file"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// BackupShard is one shard's copy.
type BackupShard struct {
	ID string `json:"id"`
	BackupFile
	Seq uint64 `json:"seq"`
}

// BackupSkip is a shard the backup did not copy, and why.
type BackupSkip struct {
	ID     string `json:"id"`
	Reason string `json:"reason"`
}

// backups holds the nodes (*Process) a backup is running on: one at a
// time per node.
var backups sync.Map

// Backup writes a tar of this node's data to w: global.db (the global
// tier's state machine, see raftglobal.Store.Backup), then every shard the
// registry says this node holds (shards/…, each a consistent copy taken
// while it serves, see shardhost.Host.Backup), then manifest.json. Copies
// are staged one at a time in <dir>/backup.tmp. before is called before
// each copy is taken and each file written, with the file's size (the
// HTTP handler extends its write deadline).
func (p *Process) Backup(ctx context.Context, nodeID, dir string, w io.Writer, before func(size int64)) (*BackupManifest, error) {
	if _, running := backups.LoadOrStore(p, true); running {
		return nil, api.Errorf(codes.ResourceExhausted, "a backup of this node is already running")
	}
	defer backups.Delete(p)
	m := &BackupManifest{Format: BackupFormat, NodeID: nodeID, RaftAddr: p.RaftAddr, Started: time.Now().UTC(), Shards: []BackupShard{}}
	tmp := filepath.Join(dir, "backup.tmp")
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	tw := tar.NewWriter(w)
	add := func(name, path string, size int64) (BackupFile, error) {
		if before != nil {
			before(size)
		}
		f, err := os.Open(path)
		if err != nil {
			return BackupFile{}, err
		}
		defer f.Close()
		defer os.Remove(path)
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: size, ModTime: time.Now(), Typeflag: tar.TypeReg}); err != nil {
			return BackupFile{}, err
		}
		sum := sha256.New()
		if _, err := io.CopyN(io.MultiWriter(tw, sum), f, size); err != nil {
			return BackupFile{}, err
		}
		return BackupFile{File: name, Size: size, SHA256: hex.EncodeToString(sum.Sum(nil))}, nil
	}

	gpath := filepath.Join(tmp, "global.db")
	if before != nil {
		before(0)
	}
	idx, strong, err := p.Global.Backup(ctx, gpath)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(gpath)
	if err != nil {
		return nil, err
	}
	if m.Global.BackupFile, err = add("global.db", gpath, st.Size()); err != nil {
		return nil, err
	}
	m.Global.Index, m.Global.Strong = idx, strong
	if m.RingEpoch, _, err = p.Global.Ring(ctx); err != nil {
		return nil, err
	}

	after := ""
	for {
		ids, next, err := p.Global.HeldShards(ctx, nodeID, after, 1000)
		if err != nil {
			return nil, err
		}
		for _, id := range ids {
			path := filepath.Join(tmp, "shard.db")
			if before != nil {
				before(0)
			}
			seq, size, err := p.Host.Backup(ctx, id, path)
			switch {
			case errors.Is(err, shardhost.ErrNoShardFile):
				m.Skipped = append(m.Skipped, BackupSkip{ID: id, Reason: "no file on this node"})
				continue
			case shardhost.HolderOf(err) != "":
				m.Skipped = append(m.Skipped, BackupSkip{ID: id, Reason: "handed off to " + shardhost.HolderOf(err) + " during the backup"})
				continue
			case err != nil:
				return nil, fmt.Errorf("shard %s: %w", id, err)
			}
			f, err := add(p.Host.ShardFile(id), path, size)
			if err != nil {
				return nil, err
			}
			m.Shards = append(m.Shards, BackupShard{ID: id, BackupFile: f, Seq: seq})
		}
		if next == "" {
			break
		}
		after = next
	}
	m.Finished = time.Now().UTC()
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := tw.WriteHeader(&tar.Header{Name: "manifest.json", Mode: 0o644, Size: int64(len(b)), ModTime: time.Now(), Typeflag: tar.TypeReg}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(b); err != nil {
		return nil, err
	}
	return m, tw.Close()
}

// backupHandler serves GET BackupPath (the tar of Backup) and passes
// everything else to next. A failure before the first byte is an error
// answer; after it the connection is cut, so the client finds no manifest.
func (p *Process) backupHandler(nodeID, dir string, log interface{ Info(string, ...any) }, next http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", next)
	mux.HandleFunc("GET "+BackupPath, func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		w.Header().Set("Content-Type", "application/x-tar")
		cw := &countingWriter{w: w}
		before := func(size int64) {
			// Before each copy and each file sent: at least 10 MB/s, and
			// never less than 2 minutes for either.
			rc.SetWriteDeadline(time.Now().Add(2*time.Minute + time.Duration(size/10_000_000)*time.Second))
		}
		start := time.Now()
		m, err := p.Backup(r.Context(), nodeID, dir, cw, before)
		if err != nil {
			log.Info("backup failed", "err", err)
			if cw.n == 0 {
				status := http.StatusInternalServerError
				switch api.CodeOf(err) {
				case codes.ResourceExhausted:
					status = http.StatusTooManyRequests
				case codes.Unavailable:
					status = http.StatusServiceUnavailable
				}
				http.Error(w, "backup: "+err.Error(), status)
				return
			}
			panic(http.ErrAbortHandler)
		}
		var bytes int64 = m.Global.Size
		for _, s := range m.Shards {
			bytes += s.Size
		}
		log.Info("backup sent", "shards", len(m.Shards), "skipped", len(m.Skipped), "bytes", bytes, "global_index", m.Global.Index, "took", time.Since(start))
	})
	return mux
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}
