package auth

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/schema"
)

func TestAuthorizeCall(t *testing.T) {
	open := &schema.Function{Name: "open"} // no auth block
	clientFn := &schema.Function{Name: "rooms:list", Auth: &schema.FunctionAuth{Roles: []string{"client"}}}
	serviceOnly := &schema.Function{Name: "svc", Auth: &schema.FunctionAuth{Roles: []string{"service"}}}
	bySub := &schema.Function{Name: "profile:edit", Auth: &schema.FunctionAuth{Roles: []string{"client"}, ShardKeyClaim: "sub"}}
	byRooms := &schema.Function{Name: "messages:send", Auth: &schema.FunctionAuth{Roles: []string{"client"}, ShardKeyClaim: "rooms"}}
	byOrg := &schema.Function{Name: "org:get", Auth: &schema.FunctionAuth{Roles: []string{"client"}, ShardKeyClaim: "org"}}

	client := func(claims map[string]any) *Identity {
		return &Identity{Method: MethodJWT, Role: RoleClient, Subject: "alice", Claims: claims}
	}
	alice := client(map[string]any{"sub": "alice", "rooms": []any{"r1", "r2", float64(42)}, "org": float64(42)})
	admin := &Identity{Role: RoleAdmin, Subject: "k1"}
	service := &Identity{Role: RoleService, Subject: "k2"}

	for _, tc := range []struct {
		name string
		id   *Identity
		fn   *schema.Function
		key  any
		code codes.Code
		msg  string
	}{
		{"admin any function", admin, open, "x", codes.OK, ""},
		{"service any function", service, open, nil, codes.OK, ""},
		{"service on a client-scoped function, any key", service, bySub, "bob", codes.OK, ""},
		{"admin on another's shard", admin, byRooms, "r9", codes.OK, ""},
		{"no identity", nil, clientFn, "x", codes.Unauthenticated, "authentication required"},
		{"client, function without auth", alice, open, "alice", codes.PermissionDenied, "not granted to clients"},
		{"client, function for service only", alice, serviceOnly, nil, codes.PermissionDenied, "not granted to clients"},
		{"client, granted function, no scope", alice, clientFn, "anything", codes.OK, ""},
		{"client on its own shard (sub)", alice, bySub, "alice", codes.OK, ""},
		{"client on another user's shard", alice, bySub, "bob", codes.PermissionDenied, `shard key "bob" is not allowed by the credential's "sub" claim`},
		{"client, list claim, member", alice, byRooms, "r2", codes.OK, ""},
		{"client, list claim, not a member", alice, byRooms, "r3", codes.PermissionDenied, `"rooms" claim`},
		{"int key vs number in list claim", alice, byRooms, int64(42), codes.OK, ""},
		{"int key vs number claim", alice, byOrg, int64(42), codes.OK, ""},
		{"int key vs other number claim", alice, byOrg, int64(43), codes.PermissionDenied, "not allowed"},
		{"string key vs number claim", alice, byOrg, "42", codes.OK, ""},
		{"int key vs string claim", client(map[string]any{"org": "42"}), byOrg, int64(42), codes.OK, ""},
		{"int key vs non-canonical string claim", client(map[string]any{"org": "042"}), byOrg, int64(42), codes.PermissionDenied, "not allowed"},
		{"fractional number claim matches nothing", client(map[string]any{"org": 4.5}), byOrg, "4.5", codes.PermissionDenied, "not allowed"},
		{"claim absent", client(map[string]any{"sub": "alice"}), byRooms, "r1", codes.PermissionDenied, "does not carry"},
		{"empty claim never matches empty key", client(map[string]any{"sub": ""}), bySub, "", codes.PermissionDenied, "names no shard key"},
		{"empty string claim", client(map[string]any{"sub": ""}), bySub, "x", codes.PermissionDenied, "not allowed"},
		{"object claim matches nothing", client(map[string]any{"rooms": map[string]any{"r1": true}}), byRooms, "r1", codes.PermissionDenied, "not allowed"},
		{"bool claim matches nothing", client(map[string]any{"org": true}), byOrg, "true", codes.PermissionDenied, "not allowed"},
		{"no shard key", alice, bySub, nil, codes.PermissionDenied, "names no shard key"},
		{"unknown role", &Identity{Role: "root"}, open, nil, codes.PermissionDenied, "may call nothing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := AuthorizeCall(tc.id, tc.fn, tc.key)
			if got := api.CodeOf(err); got != tc.code {
				t.Fatalf("code %v (%v); want %v", got, err, tc.code)
			}
			if tc.msg != "" && !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %q does not say %q", err, tc.msg)
			}
			if tc.code == codes.PermissionDenied && !errors.Is(err, ErrPermissionDenied) {
				t.Fatalf("not ErrPermissionDenied: %v", err)
			}
		})
	}
}

func TestAuthorizeSQLAndAdmin(t *testing.T) {
	for _, tc := range []struct {
		id         *Identity
		sql, admin codes.Code
	}{
		{nil, codes.Unauthenticated, codes.Unauthenticated},
		{&Identity{Role: RoleAdmin}, codes.OK, codes.OK},
		{&Identity{Role: RoleService}, codes.OK, codes.PermissionDenied},
		{&Identity{Role: RoleClient}, codes.PermissionDenied, codes.PermissionDenied},
		{&Identity{Role: "root"}, codes.PermissionDenied, codes.PermissionDenied},
	} {
		if got := api.CodeOf(AuthorizeSQL(tc.id)); got != tc.sql {
			t.Errorf("AuthorizeSQL(%+v) = %v; want %v", tc.id, got, tc.sql)
		}
		if got := api.CodeOf(AuthorizeAdmin(tc.id)); got != tc.admin {
			t.Errorf("AuthorizeAdmin(%+v) = %v; want %v", tc.id, got, tc.admin)
		}
	}
}
