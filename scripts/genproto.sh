#!/usr/bin/env bash
# Regenerates the Go code for proto/lunora/v1/*.proto.
#
# Usage: scripts/genproto.sh [OUT_DIR]
#   OUT_DIR defaults to ./proto (the generated files land in
#   OUT_DIR/lunora/v1/*.pb.go). scripts/check-genproto.sh passes a temp dir.
#
# Pinned tools (change them here, then rerun and commit the output):
#   protoc              Debian protobuf-compiler (3.21.12 when last generated)
#   protoc-gen-go       google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
#   protoc-gen-go-grpc  google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
# Plugins are installed with `go install` into $GENPROTO_BIN
# (default: $(go env GOPATH)/bin) and passed to protoc by explicit path, so
# whatever else is on $PATH does not matter.
set -euo pipefail

PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.5.1
EXPECTED_PROTOC_VERSION=3.21.12

export LC_ALL=C
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

out_dir=${1:-proto}
mkdir -p "$out_dir"

# --- protoc ---------------------------------------------------------------
if ! command -v protoc >/dev/null 2>&1; then
  echo "genproto: protoc not found; installing Debian package protobuf-compiler" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update
  $sudo apt-get install -y protobuf-compiler
fi
protoc_version=$(protoc --version | awk '{print $2}')
if [ "$protoc_version" != "$EXPECTED_PROTOC_VERSION" ]; then
  echo "genproto: warning: protoc $protoc_version, files were generated with $EXPECTED_PROTOC_VERSION;" \
       "the '// protoc' header line will differ" >&2
fi

# --- plugins --------------------------------------------------------------
bin_dir=${GENPROTO_BIN:-$(go env GOPATH)/bin}
mkdir -p "$bin_dir"
GOBIN="$bin_dir" go install "google.golang.org/protobuf/cmd/protoc-gen-go@${PROTOC_GEN_GO_VERSION}"
GOBIN="$bin_dir" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@${PROTOC_GEN_GO_GRPC_VERSION}"

got=$("$bin_dir/protoc-gen-go" --version)
[ "$got" = "protoc-gen-go ${PROTOC_GEN_GO_VERSION}" ] ||
  { echo "genproto: unexpected protoc-gen-go version: $got" >&2; exit 1; }
got=$("$bin_dir/protoc-gen-go-grpc" --version)
[ "$got" = "protoc-gen-go-grpc ${PROTOC_GEN_GO_GRPC_VERSION#v}" ] ||
  { echo "genproto: unexpected protoc-gen-go-grpc version: $got" >&2; exit 1; }

# --- generate -------------------------------------------------------------
protos=(proto/lunora/v1/*.proto)
[ -e "${protos[0]}" ] || { echo "genproto: no .proto files in proto/lunora/v1" >&2; exit 1; }

# Drop previously generated files so a removed .proto leaves nothing stale.
rm -f "$out_dir"/lunora/v1/*.pb.go

protoc \
  --plugin=protoc-gen-go="$bin_dir/protoc-gen-go" \
  --plugin=protoc-gen-go-grpc="$bin_dir/protoc-gen-go-grpc" \
  -I proto \
  --go_out="$out_dir" --go_opt=paths=source_relative \
  --go-grpc_out="$out_dir" --go-grpc_opt=paths=source_relative \
  "${protos[@]}"

echo "genproto: generated $(ls "$out_dir"/lunora/v1/*.pb.go | wc -l) files into $out_dir/lunora/v1"
