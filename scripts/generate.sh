#!/usr/bin/env bash
# generate.sh regenerates the committed Go code for the contracts under proto/
# and lints them. It installs the protoc plugins into ./bin at the versions
# go.mod pins, so generated code changes only when go.mod does, and runs buf
# from the Go module proxy so nothing but Go is needed on the machine.
#
# Usage: scripts/generate.sh            install plugins, buf generate, buf lint
#        scripts/generate.sh lint       buf lint only
set -euo pipefail

cd "$(dirname "$0")/.."

BUF_VERSION=v1.75.0
buf() { go run "github.com/bufbuild/buf/cmd/buf@${BUF_VERSION}" "$@"; }

# The plugin versions come from go.mod, so the generated code always matches
# the runtime libraries it is compiled against.
mod_version() { go list -m -f '{{.Version}}' "$1"; }

install_plugins() {
	local pb connect
	pb=$(mod_version google.golang.org/protobuf)
	connect=$(mod_version connectrpc.com/connect)
	GOBIN="$PWD/bin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@${pb}"
	GOBIN="$PWD/bin" go install "connectrpc.com/connect/cmd/protoc-gen-connect-go@${connect}"
}

case "${1:-all}" in
all)
	install_plugins
	buf generate
	buf lint
	;;
lint)
	buf lint
	;;
*)
	echo "usage: $0 [all|lint]" >&2
	exit 2
	;;
esac
