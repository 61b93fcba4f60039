package schema

import "fmt"

// Limits bound what lunora.yaml may declare, so that every declared
// function can run within the bounds the shards enforce at run time.
// App.CheckLimits checks them when a process loads its schema.
type Limits struct {
	// MaxStatements bounds the statements of one function.
	MaxStatements int
	// MaxSQLLen bounds one statement in bytes (a function's and an admin
	// one; shards refuse longer admin SQL and could not prepare a longer
	// function statement).
	MaxSQLLen int
	// MaxParams bounds a function's declared arguments and the named
	// parameters of one admin statement.
	MaxParams int
	// MaxValueBytes is the largest string or blob a statement may build or
	// bind (SQLite's SQLITE_LIMIT_LENGTH); an argument's max_len must not
	// exceed it.
	MaxValueBytes int
}

// Defaults of Limits.
const (
	DefaultMaxStatements = 64
	DefaultMaxSQLLen     = 64 << 10
	DefaultMaxParams     = 256
	DefaultMaxValueBytes = 16 << 20
)

// DefaultLimits returns the defaults.
func DefaultLimits() Limits {
	return Limits{
		MaxStatements: DefaultMaxStatements,
		MaxSQLLen:     DefaultMaxSQLLen,
		MaxParams:     DefaultMaxParams,
		MaxValueBytes: DefaultMaxValueBytes,
	}
}

// Validate reports a bound that is not positive.
func (l Limits) Validate() error {
	if l.MaxStatements < 1 || l.MaxSQLLen < 1 || l.MaxParams < 1 || l.MaxValueBytes < 1 {
		return fmt.Errorf("schema limits must be positive: statements per function %d, SQL length %d, parameters %d, value bytes %d",
			l.MaxStatements, l.MaxSQLLen, l.MaxParams, l.MaxValueBytes)
	}
	return nil
}

// CheckLimits reports, as a *LineError naming the function's line, the
// first function (in name order) that declares more than l allows: too
// many statements, a statement too long, too many arguments, or an
// argument whose max_len (or the default DefaultMaxArgLen) exceeds the
// largest value a statement may hold.
func (a *App) CheckLimits(l Limits) error {
	if err := l.Validate(); err != nil {
		return err
	}
	for _, name := range a.FunctionNames() {
		f := a.Functions[name]
		fail := func(format string, args ...any) error {
			return &LineError{File: a.File, Line: f.Line, Msg: fmt.Sprintf("function %s: ", name) + fmt.Sprintf(format, args...)}
		}
		if len(f.SQL) > l.MaxStatements {
			return fail("declares %d statements, over the limit of %d per function (-max-function-statements)", len(f.SQL), l.MaxStatements)
		}
		for i, stmt := range f.SQL {
			if len(stmt) > l.MaxSQLLen {
				return fail("statement %d is %d bytes, over the limit of %d (-max-sql-bytes)", i+1, len(stmt), l.MaxSQLLen)
			}
		}
		if len(f.Args) > l.MaxParams {
			return fail("declares %d arguments, over the limit of %d (-max-params)", len(f.Args), l.MaxParams)
		}
		for _, arg := range f.Args {
			if arg.Type != Text && arg.Type != Blob {
				continue
			}
			n := arg.MaxLen
			if n == 0 {
				n = DefaultMaxArgLen
			}
			if n > l.MaxValueBytes {
				return fail("argument %s: max_len %d is over the largest value a statement may hold, %d bytes (-max-value-bytes)", arg.Name, n, l.MaxValueBytes)
			}
		}
	}
	return nil
}
