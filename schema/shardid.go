package schema

import (
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/lunora/lunora/api"
	"google.golang.org/grpc/codes"
)

// MaxShardKeyLen bounds a shard key in bytes.
const MaxShardKeyLen = 512

// ShardID is "<group>=<key>" for a sharded group and RootShard for the root.
// Keys of int groups are canonical decimal, so "042" and "42" name one shard.

// ResolveShard computes the shard a call of f runs on. shardKey, when not
// empty, names the key explicitly; otherwise it comes from the argument named
// like the function's shard_by column. When both are given they must agree.
// It returns the shard ID and the arguments with the key argument filled in
// from shardKey when the call left it out. Call it before BindArgs.
func (a *App) ResolveShard(f *Function, args map[string]any, shardKey string) (string, map[string]any, error) {
	if f.Global() {
		if shardKey != "" && shardKey != GlobalGroup {
			return "", nil, api.Errorf(codes.InvalidArgument, "function %s runs on the global tier and takes no shard_key (got %q)", f.Name, shardKey)
		}
		return GlobalGroup, args, nil
	}
	if f.ShardBy == RootShard {
		if shardKey != "" && shardKey != RootShard {
			return "", nil, api.Errorf(codes.InvalidArgument, "function %s runs in the root shard and takes no shard_key (got %q)", f.Name, shardKey)
		}
		return RootShard, args, nil
	}
	group := f.ShardBy
	kt := a.GroupKeyType(group)
	var fromArg string
	argV, hasArg := args[group]
	if hasArg && argV != nil {
		tv, err := coerce(kt, argV)
		if err != nil {
			return "", nil, api.Errorf(codes.InvalidArgument, "function %s: argument %q (the shard key): %v", f.Name, group, err)
		}
		fromArg = keyString(tv)
	}
	var key string
	switch {
	case shardKey != "" && fromArg != "":
		canon, err := canonicalKey(kt, shardKey)
		if err != nil {
			return "", nil, err
		}
		if canon != fromArg {
			return "", nil, api.Errorf(codes.InvalidArgument, "function %s: shard_key %q and argument %s=%q name different shards", f.Name, shardKey, group, fromArg)
		}
		key = canon
	case shardKey != "":
		canon, err := canonicalKey(kt, shardKey)
		if err != nil {
			return "", nil, err
		}
		key = canon
		if f.args[group] != nil {
			filled := make(map[string]any, len(args)+1)
			for k, v := range args {
				filled[k] = v
			}
			if kt == Int {
				n, _ := strconv.ParseInt(canon, 10, 64)
				filled[group] = n
			} else {
				filled[group] = canon
			}
			args = filled
		}
	case fromArg != "":
		key = fromArg
	default:
		return "", nil, api.Errorf(codes.InvalidArgument, "function %s runs on the shard named by %s: pass argument %q or shard_key", f.Name, group, group)
	}
	if err := checkKey(key); err != nil {
		return "", nil, err
	}
	return group + "=" + key, args, nil
}

func keyString(v any) string {
	switch x := v.(type) {
	case int64:
		return strconv.FormatInt(x, 10)
	case string:
		return x
	}
	return ""
}

func canonicalKey(t Type, key string) (string, error) {
	if t == Int {
		n, err := strconv.ParseInt(strings.TrimSpace(key), 10, 64)
		if err != nil {
			return "", api.Errorf(codes.InvalidArgument, "shard key %q must be an integer", key)
		}
		return strconv.FormatInt(n, 10), nil
	}
	return key, nil
}

func checkKey(key string) error {
	switch {
	case key == "":
		return api.Errorf(codes.InvalidArgument, "shard key must not be empty")
	case len(key) > MaxShardKeyLen:
		return api.Errorf(codes.InvalidArgument, "shard key is %d bytes, over the limit of %d", len(key), MaxShardKeyLen)
	case !utf8.ValidString(key) || strings.ContainsRune(key, 0):
		return api.Errorf(codes.InvalidArgument, "shard key must be valid UTF-8 without NUL bytes")
	}
	return nil
}

// ParseShardID checks a shard ID against the app and returns its group and
// its key typed as the group's key column (int64 or string; nil for root).
func (a *App) ParseShardID(id string) (group string, key any, err error) {
	if id == GlobalGroup {
		if len(a.Groups[GlobalGroup]) == 0 {
			return "", nil, api.Errorf(codes.InvalidArgument, "no table is global: true, so there is no %s to address", GlobalGroup)
		}
		return GlobalGroup, nil, nil
	}
	if id == "" || id == RootShard {
		if len(a.Groups[RootShard]) == 0 {
			return "", nil, api.Errorf(codes.InvalidArgument, "no table lives in the root shard; name a shard as <shard_by column>=<key>")
		}
		return RootShard, nil, nil
	}
	group, raw, ok := strings.Cut(id, "=")
	if !ok || group == RootShard || group == GlobalGroup || len(a.Groups[group]) == 0 {
		return "", nil, api.Errorf(codes.InvalidArgument, "shard %q: a shard ID is %s or <shard_by column>=<key>, and %q is not a shard_by column of any table", id, RootShard, group)
	}
	if err := checkKey(raw); err != nil {
		return "", nil, err
	}
	kt := a.GroupKeyType(group)
	canon, err := canonicalKey(kt, raw)
	if err != nil {
		return "", nil, err
	}
	if canon != raw {
		return "", nil, api.Errorf(codes.InvalidArgument, "shard %q: write the key as %q", id, canon)
	}
	if kt == Int {
		n, _ := strconv.ParseInt(canon, 10, 64)
		return group, n, nil
	}
	return group, canon, nil
}
