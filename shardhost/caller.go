package shardhost

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/lunora/lunora/auth"
	"github.com/lunora/lunora/sqlitex"
)

// callerOf is the identity a request carries (auth.FromContext), as the
// lunora_auth() SQL function reads it; the zero Caller when there is none.
// It allocates nothing: the claims map is shared, never modified.
func callerOf(ctx context.Context) sqlitex.Caller {
	id := auth.FromContext(ctx)
	if id == nil {
		return sqlitex.Caller{}
	}
	return sqlitex.Caller{Known: true, Subject: id.Subject, Claims: id.Claims}
}

// callerKey extends a live query's key (queryKey) with what lunora_auth
// can read of id — its subject and claims — so that only subscribers who
// would see the same result share an evaluation. Claims marshal with
// sorted keys. It starts with two NULs, which queryKey never writes (its
// argument names are identifiers, its values quoted), and holds no raw NUL
// after them (a quoted subject, JSON claims).
func callerKey(id *auth.Identity) string {
	var b strings.Builder
	b.WriteString("\x00\x00caller:")
	if id == nil {
		b.WriteString("none")
		return b.String()
	}
	b.WriteString(strconv.Quote(id.Subject))
	b.WriteByte(' ')
	claims, err := json.Marshal(id.Claims)
	if err != nil {
		// Claims that do not marshal cannot be compared: a key of this
		// identity alone.
		fmt.Fprintf(&b, "unique %p", id)
		return b.String()
	}
	b.Write(claims)
	return b.String()
}
