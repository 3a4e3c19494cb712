#!/usr/bin/env bash
# Prints the Debian packages the build needs that this machine lacks, one per line: a C compiler
# and make (jemalloc and ring are built from C), protoc and protobuf's headers (the etcd client's
# gRPC code is generated at build time). serve.sh and test.sh install them with apt-install.sh.
set -euo pipefail
{ command -v cc && command -v make; } >/dev/null 2>&1 || echo build-essential
command -v protoc >/dev/null 2>&1 || echo protobuf-compiler
[ -f /usr/include/google/protobuf/descriptor.proto ] || echo libprotobuf-dev
