package raftglobal

import (
	"context"
	"time"

	"github.com/lunora/lunora/api"
	"google.golang.org/grpc/codes"
)

// APIKey is an API key as the global tier records it: never its secret,
// only the secret's SHA-256. The auth package makes keys and checks
// secrets; this package only stores the records.
type APIKey struct {
	ID   string
	Name string
	Role string
	Hash []byte
	// CreatedMs is lunora_now() of the write that stored the key;
	// RevokedMs that of its revocation, 0 while the key is live.
	CreatedMs int64
	RevokedMs int64
}

// maxKeyName bounds a key's name (it is a label for people).
const maxKeyName = 200

// ErrKeyExists is the answer to storing a key under an ID already taken.
var ErrKeyExists = api.New(codes.AlreadyExists, "an API key with this ID exists")

// PutKey stores a new key (leader only). Its CreatedMs is the write's
// stamp; the stored record is returned. An ID already taken is
// ErrKeyExists: IDs are random, so that is a retry of a write that
// succeeded, or a bug.
func (s *Store) PutKey(ctx context.Context, k APIKey) (APIKey, error) {
	switch {
	case k.ID == "" || len(k.ID) > 64:
		return APIKey{}, api.Errorf(codes.InvalidArgument, "an API key needs an ID of 1 to 64 characters")
	case k.Name == "" || len(k.Name) > maxKeyName:
		return APIKey{}, api.Errorf(codes.InvalidArgument, "an API key needs a name of 1 to %d bytes", maxKeyName)
	case k.Role == "":
		return APIKey{}, api.Errorf(codes.InvalidArgument, "an API key needs a role")
	case len(k.Hash) != 32:
		return APIKey{}, api.Errorf(codes.InvalidArgument, "an API key's hash must be a SHA-256 (32 bytes), got %d bytes", len(k.Hash))
	}
	res, err := s.system(ctx, map[string]any{"id": k.ID, "name": k.Name, "role": k.Role, "hash": k.Hash},
		`INSERT INTO __lunora_keys (id, name, role, hash, created_ms, revoked_ms)
		 VALUES (:id, :name, :role, :hash, lunora_now(), 0) ON CONFLICT (id) DO NOTHING`,
		`SELECT changes(), created_ms FROM __lunora_keys WHERE id = :id`)
	if err != nil {
		return APIKey{}, err
	}
	if firstInt(res) != 1 {
		return APIKey{}, ErrKeyExists
	}
	k.CreatedMs, _ = cell(res, 1).(int64)
	k.RevokedMs = 0
	return k, nil
}

// RevokeKey marks a key revoked (leader only) and returns its record; a
// key revoked before keeps its first revocation time. An unknown ID is
// NOT_FOUND.
func (s *Store) RevokeKey(ctx context.Context, id string) (APIKey, error) {
	if id == "" {
		return APIKey{}, api.Errorf(codes.InvalidArgument, "name the API key to revoke by its ID")
	}
	res, err := s.system(ctx, map[string]any{"id": id},
		`UPDATE __lunora_keys SET revoked_ms = lunora_now() WHERE id = :id AND revoked_ms = 0`,
		`SELECT `+keyColumns+` FROM __lunora_keys WHERE id = :id`)
	if err != nil {
		return APIKey{}, err
	}
	if len(res.Rows) == 0 {
		return APIKey{}, api.Errorf(codes.NotFound, "no API key with ID %q", id)
	}
	return keyFromRow(res.Rows[0]), nil
}

// LookupKey reads one key from this replica; nil when the ID is unknown.
// A replica that has not heard from the leader within maxStaleness (when
// positive) refuses (UNAVAILABLE, raftglobal.ErrTooStale) rather than
// answer from a copy that may miss a revocation.
func (s *Store) LookupKey(ctx context.Context, id string, maxStaleness time.Duration) (*APIKey, error) {
	if maxStaleness > 0 {
		if err := s.ready(ctx, api.ReadOptions{Consistency: api.Stale, MaxStaleness: maxStaleness}); err != nil {
			return nil, err
		}
	}
	res, err := s.systemRead(ctx, map[string]any{"id": id}, `SELECT `+keyColumns+` FROM __lunora_keys WHERE id = :id`)
	if err != nil || len(res.Rows) == 0 {
		return nil, err
	}
	k := keyFromRow(res.Rows[0])
	return &k, nil
}

// Keys lists every key this replica has, live and revoked, oldest first
// (at most limit of them, with more reporting whether there are others).
func (s *Store) Keys(ctx context.Context, limit int) (keys []APIKey, more bool, err error) {
	if limit < 1 || limit > s.cfg.MaxResultRows {
		return nil, false, api.Errorf(codes.InvalidArgument, "limit must be between 1 and %d", s.cfg.MaxResultRows)
	}
	res, err := s.systemRead(ctx, map[string]any{"limit": int64(limit + 1)},
		`SELECT `+keyColumns+` FROM __lunora_keys ORDER BY created_ms, id LIMIT :limit`)
	if err != nil {
		return nil, false, err
	}
	for _, r := range res.Rows {
		keys = append(keys, keyFromRow(r))
	}
	if len(keys) > limit {
		return keys[:limit], true, nil
	}
	return keys, false, nil
}

const keyColumns = `id, name, role, hash, created_ms, revoked_ms`

func keyFromRow(r []any) APIKey {
	var k APIKey
	k.ID, _ = r[0].(string)
	k.Name, _ = r[1].(string)
	k.Role, _ = r[2].(string)
	k.Hash, _ = r[3].([]byte)
	k.CreatedMs, _ = r[4].(int64)
	k.RevokedMs, _ = r[5].(int64)
	return k
}
