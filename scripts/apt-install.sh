#!/usr/bin/env bash
# Installs the Debian packages a script of this repository needs: as root with apt-get, letting
# no package start a system service (etcd-server, knot and nsd would; the tests and benchmarks
# start their own); otherwise prints the command to run and fails.
# Usage: scripts/apt-install.sh [--no-install-recommends] PACKAGE…   (no package: nothing to do)
set -euo pipefail
options=()
if [ "${1:-}" = --no-install-recommends ]; then options+=("$1"); shift; fi
[ $# -gt 0 ] || exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing: $*; install with: sudo apt-get install -y $*" >&2
  exit 1
fi
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy"
  trap 'rm -f "$policy"' EXIT
fi
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${options[@]}" "$@" >/dev/null
