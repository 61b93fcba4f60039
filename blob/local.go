package blob

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// Local is a Store in a local directory, for dev mode and single-node
// deployments. Each blob is two files, <dir>/<ab>/<id> (the bytes) and
// <dir>/<ab>/<id>.json (its Meta), <ab> being the ID's last two
// characters. An upload goes to a temporary file under <dir>/tmp, is
// fsynced and then linked into place; the metadata file, written last, is
// what makes a blob exist, so a crash never leaves a half-written blob
// visible.
type Local struct {
	dir string
	now func() time.Time
}

// OpenLocal opens (creating it if needed) a local blob directory and
// removes temporary files a crash left behind.
func OpenLocal(dir string) (*Local, error) {
	if dir == "" {
		return nil, errors.New("blob: local directory is required")
	}
	tmp := filepath.Join(dir, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return nil, fmt.Errorf("blob: %w", err)
	}
	ents, err := os.ReadDir(tmp)
	if err != nil {
		return nil, fmt.Errorf("blob: %w", err)
	}
	for _, e := range ents {
		_ = os.Remove(filepath.Join(tmp, e.Name()))
	}
	return &Local{dir: dir, now: time.Now}, nil
}

func (l *Local) paths(id string) (dir, data, meta string) {
	dir = filepath.Join(l.dir, id[len(id)-min(2, len(id)):])
	return dir, filepath.Join(dir, id), filepath.Join(dir, id+".json")
}

// Put implements Store.
func (l *Local) Put(ctx context.Context, id string, r io.Reader, opts PutOptions) (Meta, error) {
	if err := checkPut(id, opts); err != nil {
		return Meta{}, err
	}
	dir, dataPath, metaPath := l.paths(id)
	if _, err := os.Stat(metaPath); err == nil {
		return Meta{}, ErrExists
	}
	f, err := os.CreateTemp(filepath.Join(l.dir, "tmp"), "put-")
	if err != nil {
		return Meta{}, fmt.Errorf("blob: %w", err)
	}
	tmpData := f.Name()
	defer os.Remove(tmpData)
	m := newMeter(ctx, r, opts)
	_, err = io.Copy(f, m)
	if err == nil {
		err = checkLength(m, opts)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return Meta{}, err
	}
	meta := Meta{ID: id, Size: m.n, ContentType: opts.ContentType, SHA256: m.sum(), Created: l.now().UTC().Truncate(time.Second), Owner: opts.Owner}
	tmpMeta, err := writeTempJSON(filepath.Join(l.dir, "tmp"), meta)
	if err != nil {
		return Meta{}, err
	}
	defer os.Remove(tmpMeta)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Meta{}, fmt.Errorf("blob: %w", err)
	}
	// Link, unlike rename, never replaces: of two uploads to one ID only
	// one gets the name.
	if err := os.Link(tmpData, dataPath); err != nil {
		if !errors.Is(err, fs.ErrExist) {
			return Meta{}, fmt.Errorf("blob: %w", err)
		}
		// Taken, or bytes without metadata: another upload of this ID
		// between its two steps, or a crash there (IDs are random, so
		// such an orphan only wastes its space).
		return Meta{}, ErrExists
	}
	if err := os.Rename(tmpMeta, metaPath); err != nil {
		_ = os.Remove(dataPath)
		return Meta{}, fmt.Errorf("blob: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return Meta{}, err
	}
	return meta, nil
}

func writeTempJSON(dir string, v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("blob: %w", err)
	}
	f, err := os.CreateTemp(dir, "meta-")
	if err != nil {
		return "", fmt.Errorf("blob: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("blob: %w", err)
	}
	return f.Name(), nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("blob: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("blob: sync %s: %w", dir, err)
	}
	return nil
}

// Stat implements Store.
func (l *Local) Stat(ctx context.Context, id string) (Meta, error) {
	if !ValidID(id) {
		return Meta{}, ErrInvalidID
	}
	_, _, metaPath := l.paths(id)
	b, err := os.ReadFile(metaPath)
	if errors.Is(err, fs.ErrNotExist) {
		return Meta{}, ErrNotFound
	}
	if err != nil {
		return Meta{}, fmt.Errorf("blob: %w", err)
	}
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return Meta{}, fmt.Errorf("blob: metadata of %s: %w", id, err)
	}
	return m, nil
}

// Get implements Store; the reader is an *os.File.
func (l *Local) Get(ctx context.Context, id string) (io.ReadCloser, Meta, error) {
	m, err := l.Stat(ctx, id)
	if err != nil {
		return nil, Meta{}, err
	}
	_, dataPath, _ := l.paths(id)
	f, err := os.Open(dataPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, Meta{}, ErrNotFound // deleted since Stat
	}
	if err != nil {
		return nil, Meta{}, fmt.Errorf("blob: %w", err)
	}
	return f, m, nil
}

// Delete implements Store. The metadata goes first: from then on the
// blob does not exist, whatever happens to its bytes.
func (l *Local) Delete(ctx context.Context, id string) error {
	if !ValidID(id) {
		return ErrInvalidID
	}
	dir, dataPath, metaPath := l.paths(id)
	if err := os.Remove(metaPath); errors.Is(err, fs.ErrNotExist) {
		return ErrNotFound
	} else if err != nil {
		return fmt.Errorf("blob: %w", err)
	}
	if err := os.Remove(dataPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blob: %w", err)
	}
	return syncDir(dir)
}
