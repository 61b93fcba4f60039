package schema

import (
	"fmt"
	"sort"
)

// RootShard is the shard that holds every table with neither shard_by nor
// global placement.
const RootShard = "__root__"

// GlobalGroup is the group of tables marked global: true. They live in the
// Raft-replicated global tier, not in a shard; "__global__" is also how
// admin SQL names that tier.
const GlobalGroup = "__global__"

// Type is a column or argument type.
type Type string

const (
	Int  Type = "int"
	Real Type = "real"
	Text Type = "text"
	Blob Type = "blob"
	Bool Type = "bool"
)

// sqlType is the SQLite declared type. Plain affinity names keep the driver
// from converting values behind our back (it turns DATE/BOOLEAN into Go types).
func (t Type) sqlType() string {
	switch t {
	case Int, Bool:
		return "INTEGER"
	case Real:
		return "REAL"
	case Text:
		return "TEXT"
	case Blob:
		return "BLOB"
	}
	return ""
}

func parseType(s string) (Type, bool) {
	switch Type(s) {
	case Int, Real, Text, Blob, Bool:
		return Type(s), true
	}
	switch s {
	case "integer":
		return Int, true
	case "string":
		return Text, true
	case "float", "double":
		return Real, true
	case "boolean":
		return Bool, true
	case "bytes":
		return Blob, true
	}
	return "", false
}

// Kind says whether a function reads or writes.
type Kind string

const (
	Query    Kind = "query"
	Mutation Kind = "mutation"
)

// App is a validated lunora.yaml.
type App struct {
	// File names the file the app was read from, for errors.
	File      string
	Tables    []*Table // in file order
	Functions map[string]*Function
	// Queues are the declared queues, by name (queues.go).
	Queues map[string]*Queue
	// Groups maps a shard group name — a shard_by column name, or RootShard —
	// to the tables that live in every shard of that group.
	Groups map[string][]*Table
	// Version is a hash of everything that shapes a shard's schema; a shard
	// whose recorded version matches skips the migration check.
	Version string
	// Crons are the scheduled calls of the `crons:` block, in file order.
	Crons []*Cron

	tables map[string]*Table
}

// Table is one declared table.
type Table struct {
	Name       string
	Columns    []*Column
	PrimaryKey []string
	Indexes    []*Index
	ShardBy    string // column name, "" for root or global
	Global     bool
	Line       int
}

// Group is the shard group the table belongs to: its shard_by column,
// GlobalGroup, or RootShard.
func (t *Table) Group() string {
	switch {
	case t.ShardBy != "":
		return t.ShardBy
	case t.Global:
		return GlobalGroup
	}
	return RootShard
}

// Column returns the named column or nil.
func (t *Table) Column(name string) *Column {
	for _, c := range t.Columns {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Column is one typed column.
type Column struct {
	Name       string
	Type       Type
	NotNull    bool
	Default    any // nil when none
	HasDefault bool
}

// Index is a secondary index.
type Index struct {
	Name    string
	Columns []string
	Unique  bool
}

// Function is one declared function.
type Function struct {
	Name string
	Kind Kind
	// ShardBy is the group the function runs in: a shard_by column name,
	// GlobalGroup, or RootShard.
	ShardBy string
	Args    []*Arg
	SQL     []string
	Line    int
	// Auth says which callers besides admin and service may call the
	// function; nil: admin and service only.
	Auth *FunctionAuth
	// ReadsCaller is true when a statement may call lunora_auth (its text
	// names it, case-insensitively — an over-approximation): the result
	// then depends on who calls, and live queries are not shared between
	// callers.
	ReadsCaller bool

	args map[string]*Arg
}

// FunctionAuth is a function's `auth:` block: the roles that may call it
// and the claim that scopes a client to its shard keys.
type FunctionAuth struct {
	// Roles that may call the function (admin, service, client). Admin
	// and service may call every function whether listed or not.
	Roles []string
	// ShardKeyClaim, when set, names the token claim a client's shard key
	// must equal (a string claim) or be an element of (a list claim).
	ShardKeyClaim string
	Line          int
}

// Allows reports whether role is listed in Roles.
func (fa *FunctionAuth) Allows(role string) bool {
	return fa != nil && contains(fa.Roles, role)
}

// Arg returns the named argument or nil.
func (f *Function) Arg(name string) *Arg { return f.args[name] }

// Global reports whether the function runs on the global tier.
func (f *Function) Global() bool { return f.ShardBy == GlobalGroup }

// Arg is one typed function argument.
type Arg struct {
	Name       string
	Type       Type
	Default    any
	HasDefault bool
	Optional   bool // absent means NULL
	MaxLen     int  // for text and blob; 0 means DefaultMaxArgLen
}

// DefaultMaxArgLen bounds a text or blob argument that declares no max_len.
const DefaultMaxArgLen = 64 << 10

// Table returns the named table or nil.
func (a *App) Table(name string) *Table { return a.tables[name] }

// Function returns the named function or nil.
func (a *App) Function(name string) *Function { return a.Functions[name] }

// FunctionNames returns the function names, sorted.
func (a *App) FunctionNames() []string {
	names := make([]string, 0, len(a.Functions))
	for n := range a.Functions {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// GroupKeyType is the type of the shard key of a group: the type of the
// shard_by column (the same in every table of the group), Text for root.
func (a *App) GroupKeyType(group string) Type {
	for _, t := range a.Groups[group] {
		if c := t.Column(group); c != nil {
			return c.Type
		}
	}
	return Text
}

// LineError is a problem in lunora.yaml at a line.
type LineError struct {
	File string
	Line int
	Msg  string
}

func (e *LineError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}
