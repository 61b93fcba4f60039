package schema

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

var (
	identRe    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	funcNameRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(:[A-Za-z_][A-Za-z0-9_]*)*$`)
)

// Load reads and validates the lunora.yaml at path.
func Load(path string) (*App, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read app schema: %w", err)
	}
	return Parse(path, data)
}

// Parse validates a lunora.yaml held in memory; file names it in errors.
// Every problem is reported as a *LineError naming the line.
func Parse(file string, data []byte) (*App, error) {
	p := &parser{file: file}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, &LineError{File: file, Line: yamlErrLine(err), Msg: "invalid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	if len(doc.Content) == 0 {
		return nil, &LineError{File: file, Msg: "empty file: declare at least one table"}
	}
	app, err := p.app(doc.Content[0])
	if err != nil {
		return nil, err
	}
	if err := app.check(file); err != nil {
		return nil, err
	}
	app.File = file
	return app, nil
}

var lineRe = regexp.MustCompile(`line (\d+)`)

func yamlErrLine(err error) int {
	m := lineRe.FindStringSubmatch(err.Error())
	if m == nil {
		return 0
	}
	var n int
	fmt.Sscan(m[1], &n)
	return n
}

type parser struct{ file string }

func (p *parser) errf(n *yaml.Node, format string, args ...any) error {
	line := 0
	if n != nil {
		line = n.Line
	}
	return &LineError{File: p.file, Line: line, Msg: fmt.Sprintf(format, args...)}
}

// mapping iterates a mapping node's pairs in file order, refusing keys that
// are not in allowed (when allowed is non-nil) and duplicates.
func (p *parser) mapping(n *yaml.Node, what string, allowed []string, fn func(key string, k, v *yaml.Node) error) error {
	if n.Kind != yaml.MappingNode {
		return p.errf(n, "%s must be a mapping", what)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if seen[k.Value] {
			return p.errf(k, "%s: duplicate key %q", what, k.Value)
		}
		seen[k.Value] = true
		if allowed != nil && !contains(allowed, k.Value) {
			return p.errf(k, "%s: unknown key %q (allowed: %s)", what, k.Value, strings.Join(allowed, ", "))
		}
		if err := fn(k.Value, k, v); err != nil {
			return err
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (p *parser) scalar(n *yaml.Node, what string) (string, error) {
	if n.Kind != yaml.ScalarNode {
		return "", p.errf(n, "%s must be a scalar", what)
	}
	return n.Value, nil
}

func (p *parser) boolean(n *yaml.Node, what string) (bool, error) {
	var b bool
	if n.Kind != yaml.ScalarNode || n.Decode(&b) != nil {
		return false, p.errf(n, "%s must be true or false", what)
	}
	return b, nil
}

func (p *parser) stringList(n *yaml.Node, what string) ([]string, error) {
	if n.Kind == yaml.ScalarNode {
		return []string{n.Value}, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, p.errf(n, "%s must be a list", what)
	}
	var out []string
	for _, c := range n.Content {
		s, err := p.scalar(c, what)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func (p *parser) app(root *yaml.Node) (*App, error) {
	app := &App{Functions: map[string]*Function{}, Queues: map[string]*Queue{}, Groups: map[string][]*Table{}, tables: map[string]*Table{}}
	var tablesNode *yaml.Node
	err := p.mapping(root, "lunora.yaml", []string{"tables", "functions", "queues", "crons"}, func(key string, k, v *yaml.Node) error {
		switch key {
		case "crons":
			var err error
			app.Crons, err = p.crons(v)
			return err
		case "tables":
			tablesNode = v
			return p.mapping(v, "tables", nil, func(name string, k, v *yaml.Node) error {
				t, err := p.table(name, k, v)
				if err != nil {
					return err
				}
				app.Tables = append(app.Tables, t)
				app.tables[name] = t
				return nil
			})
		case "functions":
			return p.mapping(v, "functions", nil, func(name string, k, v *yaml.Node) error {
				f, err := p.function(name, k, v)
				if err != nil {
					return err
				}
				app.Functions[name] = f
				return nil
			})
		case "queues":
			return p.mapping(v, "queues", nil, func(name string, k, v *yaml.Node) error {
				q, err := p.queue(name, k, v)
				if err != nil {
					return err
				}
				app.Queues[name] = q
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(app.Tables) == 0 {
		return nil, p.errf(tablesNode, "declare at least one table under \"tables\"")
	}
	return app, nil
}

func (p *parser) table(name string, k, v *yaml.Node) (*Table, error) {
	if !identRe.MatchString(name) {
		return nil, p.errf(k, "table name %q must be an identifier (letters, digits, _)", name)
	}
	if reservedName(name) {
		return nil, p.errf(k, "table name %q is reserved (names starting with sqlite_ or __lunora belong to the system)", name)
	}
	t := &Table{Name: name, Line: k.Line}
	var pkNode, shardNode *yaml.Node
	err := p.mapping(v, "table "+name, []string{"columns", "primary_key", "indexes", "shard_by", "global"}, func(key string, k, v *yaml.Node) error {
		var err error
		switch key {
		case "columns":
			err = p.mapping(v, "columns of "+name, nil, func(col string, k, v *yaml.Node) error {
				c, err := p.column(name, col, k, v)
				if err == nil {
					t.Columns = append(t.Columns, c)
				}
				return err
			})
		case "primary_key":
			pkNode = v
			t.PrimaryKey, err = p.stringList(v, "primary_key of "+name)
		case "indexes":
			t.Indexes, err = p.indexes(name, v)
		case "shard_by":
			shardNode = v
			t.ShardBy, err = p.scalar(v, "shard_by of "+name)
		case "global":
			t.Global, err = p.boolean(v, "global of "+name)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(t.Columns) == 0 {
		return nil, p.errf(k, "table %s: declare at least one column", name)
	}
	if len(t.PrimaryKey) == 0 {
		return nil, p.errf(k, "table %s: primary_key is required", name)
	}
	seen := map[string]bool{}
	for _, c := range t.PrimaryKey {
		if t.Column(c) == nil {
			return nil, p.errf(pkNode, "table %s: primary_key column %q is not declared", name, c)
		}
		if seen[c] {
			return nil, p.errf(pkNode, "table %s: primary_key names %q twice", name, c)
		}
		seen[c] = true
	}
	if t.ShardBy != "" {
		if t.Global {
			return nil, p.errf(shardNode, "table %s: shard_by and global are exclusive", name)
		}
		c := t.Column(t.ShardBy)
		if c == nil {
			return nil, p.errf(shardNode, "table %s: shard_by column %q is not declared", name, t.ShardBy)
		}
		if c.Type != Text && c.Type != Int {
			return nil, p.errf(shardNode, "table %s: shard_by column %q must be text or int, not %s", name, t.ShardBy, c.Type)
		}
	}
	for i, ix := range t.Indexes {
		if ix.Name == "" {
			ix.Name = fmt.Sprintf("%s_idx%d", name, i)
		}
		for _, c := range ix.Columns {
			if t.Column(c) == nil {
				return nil, p.errf(k, "table %s: index %s names undeclared column %q", name, ix.Name, c)
			}
		}
	}
	return t, nil
}

func reservedName(name string) bool {
	l := strings.ToLower(name)
	return strings.HasPrefix(l, "sqlite_") || strings.HasPrefix(l, "__lunora")
}

func (p *parser) column(table, name string, k, v *yaml.Node) (*Column, error) {
	if !identRe.MatchString(name) {
		return nil, p.errf(k, "table %s: column name %q must be an identifier", table, name)
	}
	if reservedName(name) {
		return nil, p.errf(k, "table %s: column name %q is reserved", table, name)
	}
	c := &Column{Name: name}
	var defNode *yaml.Node
	if v.Kind == yaml.ScalarNode {
		t, ok := parseType(v.Value)
		if !ok {
			return nil, p.errf(v, "table %s column %s: unknown type %q (int, real, text, blob, bool)", table, name, v.Value)
		}
		c.Type = t
		return c, nil
	}
	err := p.mapping(v, "column "+table+"."+name, []string{"type", "not_null", "default"}, func(key string, k, v *yaml.Node) error {
		var err error
		switch key {
		case "type":
			var s string
			if s, err = p.scalar(v, "type"); err == nil {
				var ok bool
				if c.Type, ok = parseType(s); !ok {
					err = p.errf(v, "table %s column %s: unknown type %q (int, real, text, blob, bool)", table, name, s)
				}
			}
		case "not_null":
			c.NotNull, err = p.boolean(v, "not_null")
		case "default":
			defNode = v
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if c.Type == "" {
		return nil, p.errf(k, "table %s column %s: type is required", table, name)
	}
	if defNode != nil {
		d, err := p.literal(defNode, c.Type, "default of "+table+"."+name)
		if err != nil {
			return nil, err
		}
		c.Default, c.HasDefault = d, true
	}
	return c, nil
}

// literal decodes a YAML scalar as a value of type t.
func (p *parser) literal(n *yaml.Node, t Type, what string) (any, error) {
	if n.Kind != yaml.ScalarNode {
		return nil, p.errf(n, "%s must be a scalar", what)
	}
	if n.Tag == "!!null" {
		return nil, nil
	}
	var out any
	var err error
	switch t {
	case Int:
		var i int64
		err = n.Decode(&i)
		out = i
	case Real:
		var f float64
		err = n.Decode(&f)
		out = f
	case Bool:
		var b bool
		err = n.Decode(&b)
		out = b
	case Text:
		out = n.Value
	case Blob:
		out = []byte(n.Value)
	}
	if err != nil {
		return nil, p.errf(n, "%s: %q is not a valid %s", what, n.Value, t)
	}
	return out, nil
}

func (p *parser) indexes(table string, n *yaml.Node) ([]*Index, error) {
	var out []*Index
	switch n.Kind {
	case yaml.MappingNode: // name: [cols] or name: {columns, unique}
		err := p.mapping(n, "indexes of "+table, nil, func(name string, k, v *yaml.Node) error {
			if !identRe.MatchString(name) || reservedName(name) {
				return p.errf(k, "table %s: index name %q must be a non-reserved identifier", table, name)
			}
			ix, err := p.index(table, v)
			if err != nil {
				return err
			}
			ix.Name = table + "_" + name
			out = append(out, ix)
			return nil
		})
		return out, err
	case yaml.SequenceNode:
		for _, c := range n.Content {
			ix, err := p.index(table, c)
			if err != nil {
				return nil, err
			}
			out = append(out, ix)
		}
		return out, nil
	}
	return nil, p.errf(n, "indexes of %s must be a list or a mapping", table)
}

func (p *parser) index(table string, n *yaml.Node) (*Index, error) {
	ix := &Index{}
	if n.Kind == yaml.SequenceNode || n.Kind == yaml.ScalarNode {
		cols, err := p.stringList(n, "index columns")
		ix.Columns = cols
		return ix, err
	}
	err := p.mapping(n, "index of "+table, []string{"columns", "unique"}, func(key string, k, v *yaml.Node) error {
		var err error
		switch key {
		case "columns":
			ix.Columns, err = p.stringList(v, "index columns")
		case "unique":
			ix.Unique, err = p.boolean(v, "unique")
		}
		return err
	})
	if err == nil && len(ix.Columns) == 0 {
		err = p.errf(n, "table %s: an index needs at least one column", table)
	}
	return ix, err
}

func (p *parser) function(name string, k, v *yaml.Node) (*Function, error) {
	if !funcNameRe.MatchString(name) {
		return nil, p.errf(k, "function name %q must be identifiers joined by ':' (e.g. messages:send)", name)
	}
	f := &Function{Name: name, Line: k.Line, args: map[string]*Arg{}}
	var sqlNode *yaml.Node
	var global bool
	var globalNode *yaml.Node
	err := p.mapping(v, "function "+name, []string{"kind", "shard_by", "global", "args", "sql", "auth"}, func(key string, k, v *yaml.Node) error {
		var err error
		switch key {
		case "kind":
			var s string
			if s, err = p.scalar(v, "kind"); err == nil {
				f.Kind = Kind(s)
				if f.Kind != Query && f.Kind != Mutation {
					err = p.errf(v, "function %s: kind must be query or mutation, not %q", name, s)
				}
			}
		case "shard_by":
			f.ShardBy, err = p.scalar(v, "shard_by")
			if err == nil && f.ShardBy == "" {
				err = p.errf(v, "function %s: shard_by must name a column", name)
			}
		case "global":
			globalNode = v
			global, err = p.boolean(v, "global of "+name)
		case "args":
			err = p.mapping(v, "args of "+name, nil, func(arg string, k, v *yaml.Node) error {
				a, err := p.arg(name, arg, k, v)
				if err == nil {
					f.Args = append(f.Args, a)
					f.args[arg] = a
				}
				return err
			})
		case "sql":
			sqlNode = v
			f.SQL, err = p.stringList(v, "sql of "+name)
		case "auth":
			f.Auth, err = p.auth(name, k, v)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if f.Kind == "" {
		return nil, p.errf(k, "function %s: kind (query or mutation) is required", name)
	}
	switch {
	case global && f.ShardBy != "":
		return nil, p.errf(globalNode, "function %s: shard_by and global are exclusive", name)
	case global:
		f.ShardBy = GlobalGroup
	case f.ShardBy == "":
		f.ShardBy = RootShard
	}
	if fa := f.Auth; fa != nil && fa.ShardKeyClaim != "" && (f.ShardBy == GlobalGroup || f.ShardBy == RootShard) {
		return nil, &LineError{File: p.file, Line: fa.Line, Msg: fmt.Sprintf("function %s: auth.shard_key_claim scopes a caller to shard keys, but the function runs %s, which has no shard key; add shard_by or drop shard_key_claim", name, placeName(f.ShardBy))}
	}
	if len(f.SQL) == 0 {
		return nil, p.errf(k, "function %s: sql needs at least one statement", name)
	}
	for i, stmt := range f.SQL {
		line := k.Line
		if sqlNode != nil {
			line = sqlNode.Line
			if sqlNode.Kind == yaml.SequenceNode {
				line = sqlNode.Content[i].Line
			}
		}
		if strings.Contains(strings.ToLower(stmt), "lunora_auth") {
			f.ReadsCaller = true
		}
		params, err := scanSQL(stmt)
		if err != nil {
			return nil, &LineError{File: p.file, Line: line, Msg: fmt.Sprintf("function %s statement %d: %v", name, i+1, err)}
		}
		for _, prm := range params {
			if f.args[prm] == nil {
				return nil, &LineError{File: p.file, Line: line, Msg: fmt.Sprintf("function %s statement %d: parameter :%s is not a declared argument", name, i+1, prm)}
			}
		}
	}
	return f, nil
}

// Roles a function's auth block may grant (the auth package's roles).
var authRoles = []string{"admin", "service", "client"}

// claimRe is the shape of a claim name: a JSON object key a provider
// would use (letters, digits, _ - . : /).
var claimRe = regexp.MustCompile(`^[A-Za-z0-9_.:/-]{1,128}$`)

// auth parses a function's auth block: {roles: [client], shard_key_claim: sub}.
func (p *parser) auth(fn string, k, v *yaml.Node) (*FunctionAuth, error) {
	fa := &FunctionAuth{Line: k.Line}
	var rolesNode *yaml.Node
	err := p.mapping(v, "auth of "+fn, []string{"roles", "shard_key_claim"}, func(key string, k, v *yaml.Node) error {
		var err error
		switch key {
		case "roles":
			rolesNode = v
			fa.Roles, err = p.stringList(v, "auth.roles of "+fn)
			if err != nil {
				return err
			}
			seen := map[string]bool{}
			for _, r := range fa.Roles {
				if !contains(authRoles, r) {
					return p.errf(v, "function %s: auth.roles: unknown role %q (allowed: %s)", fn, r, strings.Join(authRoles, ", "))
				}
				if seen[r] {
					return p.errf(v, "function %s: auth.roles names %q twice", fn, r)
				}
				seen[r] = true
			}
		case "shard_key_claim":
			fa.ShardKeyClaim, err = p.scalar(v, "auth.shard_key_claim of "+fn)
			if err == nil && !claimRe.MatchString(fa.ShardKeyClaim) {
				err = p.errf(v, "function %s: auth.shard_key_claim %q must name a claim (1-128 letters, digits, _ . : / -)", fn, fa.ShardKeyClaim)
			}
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(fa.Roles) == 0 {
		if rolesNode == nil {
			rolesNode = v
		}
		return nil, p.errf(rolesNode, "function %s: auth.roles must list at least one role (%s); without an auth block only admin and service may call it", fn, strings.Join(authRoles, ", "))
	}
	if fa.ShardKeyClaim != "" && !contains(fa.Roles, "client") {
		return nil, p.errf(v, "function %s: auth.shard_key_claim scopes clients, but auth.roles does not list client", fn)
	}
	return fa, nil
}

func placeName(shardBy string) string {
	if shardBy == GlobalGroup {
		return "on the global tier"
	}
	return "in the root shard"
}

func (p *parser) arg(fn, name string, k, v *yaml.Node) (*Arg, error) {
	if !identRe.MatchString(name) {
		return nil, p.errf(k, "function %s: argument name %q must be an identifier", fn, name)
	}
	a := &Arg{Name: name}
	if v.Kind == yaml.ScalarNode {
		t, ok := parseType(v.Value)
		if !ok {
			return nil, p.errf(v, "function %s arg %s: unknown type %q (int, real, text, blob, bool)", fn, name, v.Value)
		}
		a.Type = t
		return a, nil
	}
	var defNode *yaml.Node
	err := p.mapping(v, "arg "+fn+"."+name, []string{"type", "default", "optional", "max_len"}, func(key string, k, v *yaml.Node) error {
		var err error
		switch key {
		case "type":
			var s string
			if s, err = p.scalar(v, "type"); err == nil {
				var ok bool
				if a.Type, ok = parseType(s); !ok {
					err = p.errf(v, "function %s arg %s: unknown type %q (int, real, text, blob, bool)", fn, name, s)
				}
			}
		case "default":
			defNode = v
		case "optional":
			a.Optional, err = p.boolean(v, "optional")
		case "max_len":
			if v.Decode(&a.MaxLen) != nil || a.MaxLen <= 0 {
				err = p.errf(v, "function %s arg %s: max_len must be a positive integer", fn, name)
			}
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if a.Type == "" {
		return nil, p.errf(k, "function %s arg %s: type is required", fn, name)
	}
	if a.MaxLen > 0 && a.Type != Text && a.Type != Blob {
		return nil, p.errf(k, "function %s arg %s: max_len applies to text and blob only", fn, name)
	}
	if defNode != nil {
		d, err := p.literal(defNode, a.Type, "default of "+fn+"."+name)
		if err != nil {
			return nil, err
		}
		a.Default, a.HasDefault = d, true
	}
	return a, nil
}

// check validates what spans tables and functions, and fills Groups and
// Version.
func (a *App) check(file string) error {
	fail := func(line int, format string, args ...any) error {
		return &LineError{File: file, Line: line, Msg: fmt.Sprintf(format, args...)}
	}
	keyType := map[string]Type{}
	for _, t := range a.Tables {
		g := t.Group()
		a.Groups[g] = append(a.Groups[g], t)
		if t.ShardBy == "" {
			continue
		}
		typ := t.Column(t.ShardBy).Type
		if prev, ok := keyType[g]; ok && prev != typ {
			return fail(t.Line, "table %s: shard_by column %s is %s here but %s in another table of the same group; a shard group needs one key type", t.Name, g, typ, prev)
		}
		keyType[g] = typ
	}
	for _, name := range a.FunctionNames() {
		f := a.Functions[name]
		if f.Global() {
			if len(a.Groups[GlobalGroup]) == 0 {
				return fail(f.Line, "function %s: is global but no table is global: true", name)
			}
			continue
		}
		if f.ShardBy == RootShard {
			if len(a.Groups[RootShard]) == 0 {
				return fail(f.Line, "function %s: has no shard_by, so it runs in the root shard, but no table lives there; add shard_by: <column>", name)
			}
			continue
		}
		kt, ok := keyType[f.ShardBy]
		if !ok {
			return fail(f.Line, "function %s: shard_by %q is not the shard_by column of any table", name, f.ShardBy)
		}
		if arg := f.args[f.ShardBy]; arg != nil && arg.Type != kt {
			return fail(f.Line, "function %s: argument %s is %s but the shard key column is %s", name, f.ShardBy, arg.Type, kt)
		}
	}
	h := sha256.New()
	groups := make([]string, 0, len(a.Groups))
	for g := range a.Groups {
		groups = append(groups, g)
	}
	sort.Strings(groups)
	for _, g := range groups {
		fmt.Fprintf(h, "group %s\n", g)
		for _, stmt := range a.GroupDDL(g) {
			fmt.Fprintln(h, stmt)
		}
	}
	a.Version = hex.EncodeToString(h.Sum(nil))[:16]
	if err := a.checkQueues(file); err != nil {
		return err
	}
	if err := a.checkCrons(file); err != nil {
		return err
	}
	return checkSQL(file, a)
}
