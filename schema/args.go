package schema

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/lunora/lunora/api"
	"google.golang.org/grpc/codes"
)

// BindArgs checks a call's arguments against f and returns them typed, with
// defaults filled in and every declared argument present (NULL when optional
// and absent). Accepted inputs are what JSON and protobuf decode to: nil,
// bool, int64, float64, json.Number, string, []byte. A blob given as a string
// is base64.
func (f *Function) BindArgs(in map[string]any) (map[string]any, error) {
	for name := range in {
		if f.args[name] == nil {
			return nil, api.Errorf(codes.InvalidArgument, "function %s has no argument %q (it takes: %s)", f.Name, name, f.argList())
		}
	}
	out := make(map[string]any, len(f.Args))
	for _, a := range f.Args {
		v, ok := in[a.Name]
		if !ok || v == nil {
			switch {
			case a.HasDefault:
				out[a.Name] = a.Default
			case a.Optional:
				out[a.Name] = nil
			default:
				return nil, api.Errorf(codes.InvalidArgument, "function %s: missing required argument %q (%s)", f.Name, a.Name, a.Type)
			}
			continue
		}
		tv, err := coerce(a.Type, v)
		if err != nil {
			return nil, api.Errorf(codes.InvalidArgument, "function %s: argument %q: %v", f.Name, a.Name, err)
		}
		max := a.MaxLen
		if max == 0 {
			max = DefaultMaxArgLen
		}
		switch x := tv.(type) {
		case string:
			if len(x) > max {
				return nil, api.Errorf(codes.InvalidArgument, "function %s: argument %q is %d bytes, over its limit of %d", f.Name, a.Name, len(x), max)
			}
		case []byte:
			if len(x) > max {
				return nil, api.Errorf(codes.InvalidArgument, "function %s: argument %q is %d bytes, over its limit of %d", f.Name, a.Name, len(x), max)
			}
		}
		out[a.Name] = tv
	}
	return out, nil
}

func (f *Function) argList() string {
	if len(f.Args) == 0 {
		return "no arguments"
	}
	names := make([]string, len(f.Args))
	for i, a := range f.Args {
		names[i] = a.Name + " " + string(a.Type)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func describe(v any) string {
	switch v.(type) {
	case bool:
		return "a boolean"
	case int64, float64, json.Number:
		return "a number"
	case string:
		return "a string"
	case []byte:
		return "bytes"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	}
	return fmt.Sprintf("%T", v)
}

// coerce converts v to the Go type of t, refusing lossy conversions.
func coerce(t Type, v any) (any, error) {
	bad := func() error { return fmt.Errorf("must be %s, got %s", t, describe(v)) }
	switch t {
	case Int:
		switch x := v.(type) {
		case int64:
			return x, nil
		case json.Number:
			i, err := strconv.ParseInt(string(x), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("must be an integer in int64 range, got %s", x)
			}
			return i, nil
		case float64:
			if x != math.Trunc(x) || math.Abs(x) > 1<<53 {
				return nil, fmt.Errorf("must be an integer, got %v", x)
			}
			return int64(x), nil
		}
	case Real:
		switch x := v.(type) {
		case float64:
			return x, nil
		case int64:
			return float64(x), nil
		case json.Number:
			f, err := x.Float64()
			if err != nil {
				return nil, fmt.Errorf("must be a number, got %s", x)
			}
			return f, nil
		}
	case Text:
		if s, ok := v.(string); ok {
			if !utf8.ValidString(s) {
				return nil, fmt.Errorf("must be valid UTF-8")
			}
			return s, nil
		}
	case Blob:
		switch x := v.(type) {
		case []byte:
			return x, nil
		case string:
			b, err := base64.StdEncoding.DecodeString(x)
			if err != nil {
				return nil, fmt.Errorf("must be base64-encoded bytes: %v", err)
			}
			return b, nil
		}
	case Bool:
		if b, ok := v.(bool); ok {
			return b, nil
		}
	}
	return nil, bad()
}

// DecodeJSONArgs decodes a JSON object of arguments keeping numbers exact.
func DecodeJSONArgs(raw json.RawMessage) (map[string]any, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return map[string]any{}, nil
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, api.Errorf(codes.InvalidArgument, "args must be a JSON object: %v", err)
	}
	return m, nil
}
