package schema

import (
	"fmt"
	"strconv"
	"strings"
)

// GroupDDL returns the CREATE statements for every table and index of a
// shard group, in file order. They are idempotent (IF NOT EXISTS).
func (a *App) GroupDDL(group string) []string {
	var out []string
	for _, t := range a.Groups[group] {
		out = append(out, t.CreateSQL())
		out = append(out, t.IndexSQL()...)
	}
	return out
}

// CreateSQL is the CREATE TABLE statement of t.
func (t *Table) CreateSQL() string {
	var b strings.Builder
	fmt.Fprintf(&b, "CREATE TABLE IF NOT EXISTS %s (", quoteIdent(t.Name))
	for i, c := range t.Columns {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(c.Definition())
	}
	b.WriteString(", PRIMARY KEY (")
	for i, c := range t.PrimaryKey {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(quoteIdent(c))
	}
	b.WriteString("))")
	return b.String()
}

// Definition is the column's definition as in CREATE TABLE or ADD COLUMN.
func (c *Column) Definition() string {
	s := quoteIdent(c.Name) + " " + c.Type.sqlType()
	if c.NotNull {
		s += " NOT NULL"
	}
	if c.HasDefault {
		s += " DEFAULT " + Literal(c.Default)
	}
	return s
}

// IndexSQL returns the CREATE INDEX statements of t.
func (t *Table) IndexSQL() []string {
	var out []string
	for _, ix := range t.Indexes {
		cols := make([]string, len(ix.Columns))
		for i, c := range ix.Columns {
			cols[i] = quoteIdent(c)
		}
		u := ""
		if ix.Unique {
			u = "UNIQUE "
		}
		out = append(out, fmt.Sprintf("CREATE %sINDEX IF NOT EXISTS %s ON %s (%s)", u, quoteIdent(ix.Name), quoteIdent(t.Name), strings.Join(cols, ", ")))
	}
	return out
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// QuoteIdent quotes an SQL identifier.
func QuoteIdent(s string) string { return quoteIdent(s) }

// Literal renders a Go value as an SQL literal.
func Literal(v any) string {
	switch x := v.(type) {
	case nil:
		return "NULL"
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case bool:
		if x {
			return "1"
		}
		return "0"
	case string:
		return "'" + strings.ReplaceAll(x, "'", "''") + "'"
	case []byte:
		return fmt.Sprintf("X'%X'", x)
	}
	panic(fmt.Sprintf("schema.Literal: unsupported %T", v))
}
