package raftglobal

import (
	"database/sql/driver"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/lunora/lunora/api"
	"google.golang.org/grpc/codes"
)

// Command is one write or read: statements run in order in one SAVEPOINT
// (a write) or one read transaction (a read), with Args bound as named
// parameters (:name, @name or $name) to every statement. The result is that
// of the last statement. Arg values are nil, int64, float64, string, []byte
// or bool.
type Command struct {
	SQL  []string
	Args map[string]any
}

// entryVersion is the first byte of every Raft entry this package writes.
const entryVersion byte = 1

// entry is the payload of one Raft log entry: the commands of one group
// commit and the time the leader stamped it with. An entry with no
// commands is the barrier a new leader writes before serving strong reads.
type entry struct {
	Time int64         `json:"t"` // Unix nanoseconds; lunora_now() in the FSM
	Cmds []wireCommand `json:"c,omitempty"`
}

// wireCommand is a Command as it travels in the log. Args are sorted by
// name so every replica binds them in the same order.
type wireCommand struct {
	SQL  []string  `json:"s"`
	Args []wireArg `json:"a,omitempty"`
	// Sys marks the statements of this package's metadata API: they run
	// outside the sandbox (they write __lunora_* tables). User SQL never
	// has it set.
	Sys bool `json:"y,omitempty"`
}

// wireArg is one named value with its type kept exactly (JSON alone would
// turn int64 into float64 and lose []byte).
type wireArg struct {
	Name string  `json:"n"`
	Kind byte    `json:"k"` // 0 NULL, 'i' int64, 'f' float64, 's' string, 'b' []byte, 't' bool
	I    int64   `json:"i,omitempty"`
	F    float64 `json:"f,omitempty"`
	S    string  `json:"s,omitempty"`
	B    []byte  `json:"b,omitempty"`
}

func encodeEntry(e *entry) ([]byte, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return nil, err
	}
	return append([]byte{entryVersion}, b...), nil
}

func decodeEntry(data []byte) (*entry, error) {
	if len(data) == 0 || data[0] != entryVersion {
		return nil, fmt.Errorf("unknown entry version")
	}
	e := &entry{}
	if err := json.Unmarshal(data[1:], e); err != nil {
		return nil, err
	}
	return e, nil
}

// toWire validates a command and turns it into its log form.
func toWire(c Command, sys bool, maxSQLLen int) (wireCommand, error) {
	if len(c.SQL) == 0 {
		return wireCommand{}, api.Errorf(codes.InvalidArgument, "command has no SQL statements")
	}
	for i, s := range c.SQL {
		if strings.TrimSpace(s) == "" {
			return wireCommand{}, api.Errorf(codes.InvalidArgument, "statement %d is empty", i+1)
		}
		if len(s) > maxSQLLen {
			return wireCommand{}, api.Errorf(codes.InvalidArgument, "statement %d is %d bytes, over the limit of %d", i+1, len(s), maxSQLLen)
		}
	}
	w := wireCommand{SQL: c.SQL, Sys: sys}
	names := make([]string, 0, len(c.Args))
	for n := range c.Args {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		a, err := wireValue(n, c.Args[n])
		if err != nil {
			return wireCommand{}, api.Errorf(codes.InvalidArgument, "arg %q: %v", n, err)
		}
		w.Args = append(w.Args, a)
	}
	return w, nil
}

func wireValue(name string, v any) (wireArg, error) {
	if name == "" {
		return wireArg{}, fmt.Errorf("an arg needs a name")
	}
	a := wireArg{Name: name}
	switch x := v.(type) {
	case nil:
	case int64:
		a.Kind, a.I = 'i', x
	case int:
		a.Kind, a.I = 'i', int64(x)
	case int32:
		a.Kind, a.I = 'i', int64(x)
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return a, fmt.Errorf("%v is not a storable number", x)
		}
		a.Kind, a.F = 'f', x
	case string:
		a.Kind, a.S = 's', x
	case []byte:
		a.Kind, a.B = 'b', x
	case bool:
		a.Kind = 't'
		if x {
			a.I = 1
		}
	default:
		return a, fmt.Errorf("unsupported value of type %T (use nil, int64, float64, string, []byte or bool)", v)
	}
	return a, nil
}

// namedValues binds a command's args, in name order.
func (w *wireCommand) namedValues() []driver.NamedValue {
	out := make([]driver.NamedValue, 0, len(w.Args))
	for _, a := range w.Args {
		var v any
		switch a.Kind {
		case 'i':
			v = a.I
		case 'f':
			v = a.F
		case 's':
			v = a.S
		case 'b':
			v = a.B
			if v.([]byte) == nil {
				v = []byte{}
			}
		case 't':
			v = a.I != 0
		}
		out = append(out, driver.NamedValue{Name: a.Name, Value: v})
	}
	return out
}
