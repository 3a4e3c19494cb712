#!/usr/bin/env bash
# Runs the server: installs what the build needs when it is missing (a C compiler and make for
# jemalloc and ring; protoc and protobuf's headers for the etcd client's generated gRPC code),
# builds in release mode, and runs `sextant serve` with the arguments given.
# Usage: scripts/serve.sh [serve flags…]   (scripts/serve.sh --help lists them)
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
{ command -v cc && command -v make; } >/dev/null 2>&1 || need_apt+=(build-essential)
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/descriptor.proto ] || need_apt+=(libprotobuf-dev)
scripts/apt-install.sh "${need_apt[@]}"
exec cargo run --release --quiet -- serve "$@"
