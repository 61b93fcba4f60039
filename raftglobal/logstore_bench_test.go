package raftglobal

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// BenchmarkLogStore compares the two durable Raft log stores on what the
// leader does: append fsync'd batches of 1 KiB entries. Figures are in
// DESIGN.md.
//
//	go test -run '^$' -bench BenchmarkLogStore -benchtime 2000x ./raftglobal/
func BenchmarkLogStore(b *testing.B) {
	type store interface {
		raft.LogStore
		Close() error
	}
	open := map[string]func(dir string) (store, error){
		"boltdb": func(dir string) (store, error) {
			return raftboltdb.NewBoltStore(filepath.Join(dir, "raft.db"))
		},
		"wal": func(dir string) (store, error) {
			meta := &metadb.BoltMetaDB{}
			w, err := raftwal.Open(dir, raftwal.WithMetaStore(meta))
			if err != nil {
				return nil, err
			}
			return walStore{w, meta}, nil
		},
	}
	payload := make([]byte, 1024)
	for _, name := range []string{"boltdb", "wal"} {
		for _, batch := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/batch=%d", name, batch), func(b *testing.B) {
				s, err := open[name](b.TempDir())
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				idx := uint64(1)
				logs := make([]*raft.Log, batch)
				b.SetBytes(int64(batch * len(payload)))
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					for j := range logs {
						logs[j] = &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: payload}
						idx++
					}
					if err := s.StoreLogs(logs); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "entries/s")
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "fsyncs/s")
			})
		}
	}
}
