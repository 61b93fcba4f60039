package cli

import (
	"flag"

	"github.com/lunora/lunora/schema"
)

// RegisterSchemaLimits adds the flags of the bounds on statements to fs,
// with schema.DefaultLimits' values. lunora-node and lunora-gateway both
// take them; give both the same values.
func RegisterSchemaLimits(fs *flag.FlagSet, l *schema.Limits) {
	*l = schema.DefaultLimits()
	fs.IntVar(&l.MaxSQLLen, "max-sql-bytes", l.MaxSQLLen, "longest SQL statement in bytes: admin SQL over it is refused (INVALID_ARGUMENT); a lunora.yaml function statement over it refuses the schema at start")
	fs.IntVar(&l.MaxParams, "max-params", l.MaxParams, "most parameters of one statement: the named params of admin SQL, the arguments a function declares, ?NNN in any statement")
	fs.IntVar(&l.MaxValueBytes, "max-value-bytes", l.MaxValueBytes, "largest string or blob one statement may build or bind (SQLite's length limit: caps zeroblob, randomblob, printf, || and group_concat); over it the statement fails with INVALID_ARGUMENT")
	fs.IntVar(&l.MaxStatements, "max-function-statements", l.MaxStatements, "most statements one lunora.yaml function may declare (checked when the schema is loaded)")
}
