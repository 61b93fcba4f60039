package sqlitex

import (
	"fmt"
	"os"

	sqlite3 "github.com/mattn/go-sqlite3"
)

var backupDriver = &sqlite3.SQLiteDriver{}

// BackupInto copies src's main database into a new file at path with
// SQLite's online backup API, all pages in one step. With a read
// transaction open on src the copy is exactly that transaction's snapshot,
// whatever other connections commit meanwhile (WAL mode). The file is
// synced; an existing file at path is replaced. It returns the file's size.
func BackupInto(src *Conn, path string) (int64, error) {
	os.Remove(path)
	dc, err := backupDriver.Open("file:" + path + "?_journal_mode=DELETE&_sync=OFF")
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", path, err)
	}
	dest := dc.(*sqlite3.SQLiteConn)
	b, err := dest.Backup("main", src.C, "main")
	if err != nil {
		dest.Close()
		return 0, fmt.Errorf("start backup: %w", err)
	}
	for {
		done, err := b.Step(-1)
		if err != nil {
			b.Close()
			dest.Close()
			return 0, fmt.Errorf("backup: %w", err)
		}
		if done {
			break
		}
	}
	if err := b.Close(); err != nil {
		dest.Close()
		return 0, fmt.Errorf("finish backup: %w", err)
	}
	if err := dest.Close(); err != nil {
		return 0, err
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return 0, err
	}
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}
