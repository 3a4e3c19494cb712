#!/usr/bin/env bash
# Runs the server: installs what the build needs when it is missing (a C compiler and make for
# jemalloc and ring; protoc and protobuf's headers for the etcd client's generated gRPC code),
# builds in release mode, and runs `sextant serve` with the arguments given.
# Usage: scripts/serve.sh [serve flags…]   (scripts/serve.sh --help lists them)
set -euo pipefail
cd "$(dirname "$0")/.."

mapfile -t need_apt < <(scripts/build-deps.sh)
scripts/apt-install.sh "${need_apt[@]}"
exec cargo run --release --quiet -- serve "$@"
