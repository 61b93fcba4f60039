package sqlitex

import (
	"encoding/json"
	"errors"
	"math"
	"strconv"
)

// Caller is the identity of whoever called the running function, as
// lunora_auth() reports it: lunora_auth('claim') is a claim,
// lunora_auth() the subject. The zero Caller is no caller: every
// lunora_auth call gives NULL.
type Caller struct {
	// Known is true when a caller is set.
	Known   bool
	Subject string
	// Claims are JSON values: string, float64 (or json.Number, int64),
	// bool, []any, map[string]any, nil.
	Claims map[string]any
}

var errClaimName = errors.New("lunora_auth: the claim name must be text, e.g. lunora_auth('sub')")

// claim is lunora_auth(name): strings as TEXT, integral numbers as
// INTEGER, other numbers as REAL, booleans as 0/1, lists and objects as
// JSON text; an absent claim (or no caller) as NULL.
func (c *Caller) claim(name any) (any, error) {
	var key string
	switch n := name.(type) {
	case string:
		key = n
	case []byte:
		if n == nil { // the driver passes SQL NULL as a nil []byte
			return nil, nil
		}
		key = string(n)
	case nil:
		return nil, nil
	default:
		return nil, errClaimName
	}
	if !c.Known {
		return nil, nil
	}
	v, ok := c.Claims[key]
	if !ok {
		return nil, nil
	}
	return claimSQL(v), nil
}

// subject is lunora_auth().
func (c *Caller) subject() any {
	if !c.Known || c.Subject == "" {
		return nil
	}
	return c.Subject
}

// claimSQL converts a JSON value to the SQL value lunora_auth returns.
func claimSQL(v any) any {
	switch x := v.(type) {
	case nil:
		return nil
	case string:
		return x
	case bool:
		if x {
			return int64(1)
		}
		return int64(0)
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
			return int64(x)
		}
		return x
	case json.Number:
		if n, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return n
		}
		if f, err := x.Float64(); err == nil {
			return f
		}
		return string(x)
	case int64:
		return x
	case int:
		return int64(x)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	return string(b)
}
