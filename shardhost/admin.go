package shardhost

import (
	"database/sql/driver"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/schema"
	"google.golang.org/grpc/codes"
)

// adminVerbs are the statements admin SQL may start with. The sandbox
// refuses the rest anyway; this gives a clearer message first.
var adminVerbs = map[string]bool{
	"SELECT": true, "INSERT": true, "UPDATE": true, "DELETE": true,
	"REPLACE": true, "WITH": true, "VALUES": true,
}

// refusedVerbs start statements SQLite knows but admin SQL may not run.
var refusedVerbs = map[string]bool{
	"ATTACH": true, "DETACH": true, "PRAGMA": true, "CREATE": true, "DROP": true,
	"ALTER": true, "BEGIN": true, "COMMIT": true, "END": true, "ROLLBACK": true,
	"SAVEPOINT": true, "RELEASE": true, "VACUUM": true, "REINDEX": true,
	"ANALYZE": true, "EXPLAIN": true,
}

// checkAdminSQL validates one admin statement and its named parameters.
func (h *Host) checkAdminSQL(sql string, params map[string]any) ([]driver.NamedValue, error) {
	if strings.TrimSpace(sql) == "" {
		return nil, api.Errorf(codes.InvalidArgument, "sql is empty")
	}
	if len(sql) > h.cfg.MaxSQLLen {
		return nil, api.Errorf(codes.InvalidArgument, "sql is %d bytes, over the limit of %d", len(sql), h.cfg.MaxSQLLen)
	}
	if len(params) > h.cfg.MaxParams {
		return nil, api.Errorf(codes.InvalidArgument, "params has %d entries, over the limit of %d per statement", len(params), h.cfg.MaxParams)
	}
	verb := schema.FirstKeyword(sql)
	if !adminVerbs[verb] && !refusedVerbs[verb] {
		return nil, api.Errorf(codes.InvalidArgument, "sql: %q does not start a statement; admin SQL may SELECT, INSERT, UPDATE, DELETE, REPLACE, WITH or VALUES", verb)
	}
	if !adminVerbs[verb] {
		return nil, api.Wrap(ErrSandbox, fmt.Sprintf("%s statements are not allowed; admin SQL may SELECT, INSERT, UPDATE, DELETE, REPLACE, WITH or VALUES", verb))
	}
	used, err := schema.ScanStatement(sql)
	if err != nil {
		return nil, api.Errorf(codes.InvalidArgument, "sql: %v", err)
	}
	usedSet := map[string]bool{}
	for _, p := range used {
		usedSet[p] = true
		if _, ok := params[p]; !ok {
			return nil, api.Errorf(codes.InvalidArgument, "sql uses parameter :%s but params has no %q", p, p)
		}
	}
	out := make([]driver.NamedValue, 0, len(params))
	names := make([]string, 0, len(params))
	for name := range params {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if !usedSet[name] {
			return nil, api.Errorf(codes.InvalidArgument, "param %q is not used by the statement", name)
		}
		v, err := adminValue(params[name])
		if err != nil {
			return nil, api.Errorf(codes.InvalidArgument, "param %q: %v", name, err)
		}
		out = append(out, driver.NamedValue{Name: name, Value: v})
	}
	return out, nil
}

func adminValue(v any) (any, error) {
	switch x := v.(type) {
	case nil, int64, float64, string, []byte, bool:
		return x, nil
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i, nil
		}
		f, err := x.Float64()
		if err != nil {
			return nil, fmt.Errorf("%s is not a number", x)
		}
		return f, nil
	}
	return nil, fmt.Errorf("unsupported value of type %T", v)
}

// namedArgs turns bound function arguments into driver values.
func namedArgs(args map[string]any) []driver.NamedValue {
	out := make([]driver.NamedValue, 0, len(args))
	for name, v := range args {
		out = append(out, driver.NamedValue{Name: name, Value: v})
	}
	return out
}
