#!/usr/bin/env bash
# Fails if proto/ is not exactly what scripts/genproto.sh would produce:
# regenerates into a temp copy of proto/ and compares with `diff -r`
# (no git needed, so it works before the first commit and on dirty trees).
set -euo pipefail

export LC_ALL=C
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cp -a proto/. "$tmp/"
rm -f "$tmp"/lunora/v1/*.pb.go

"$repo_root/scripts/genproto.sh" "$tmp" >/dev/null

if ! diff -r proto "$tmp"; then
  echo >&2
  echo "check-genproto: FAIL: generated protobuf code in proto/ is out of date" >&2
  echo "check-genproto: (lines marked < are in proto/, > is what genproto produces)." >&2
  echo "check-genproto: run scripts/genproto.sh and commit the result." >&2
  exit 1
fi
echo "check-genproto: OK: proto/ is up to date"
