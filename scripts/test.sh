#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh Debian machine with Rust, then runs
# formatting, lint and the whole test suite. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# System tools the build (scripts/build-deps.sh), the tests and the walk-through use: kill and
# ps (procps), curl, dig (bind9-dnsutils), the resolvers
# that tests/it/resolvers.rs starts on loopback ports (unbound, dnsmasq, BIND's named), the scraper
# that tests/it/clients.rs starts (victoria-metrics), etcd and etcdctl for tests/it/etcd.rs, and
# Python with venv for the Python clients, Chromium and Node.js for the dashboard's browser test.
mapfile -t need_apt < <(scripts/build-deps.sh)
[ -x /usr/bin/etcd ] || need_apt+=(etcd-server)
[ -x /usr/bin/etcdctl ] || need_apt+=(etcd-client)
# (kill as a program, which the tests run: the shell's built-in does not count)
{ [ -x /bin/kill ] || [ -x /usr/bin/kill ]; } && command -v ps >/dev/null 2>&1 || need_apt+=(procps)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v dig >/dev/null 2>&1 || need_apt+=(bind9-dnsutils)
[ -x /usr/sbin/unbound ] || need_apt+=(unbound)
[ -x /usr/sbin/dnsmasq ] || need_apt+=(dnsmasq-base)
[ -x /usr/sbin/named ] || need_apt+=(bind9)
[ -x /usr/bin/victoria-metrics ] || need_apt+=(victoria-metrics)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need_apt+=(python3-venv)
# The dashboard's browser test (tests/it/ui.rs): Debian's Chromium, driven by Playwright on Node.js.
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
scripts/apt-install.sh "${need_apt[@]}"
# systemd-resolved for tests/it/resolvers.rs, unpacked into target/ rather than installed: installing
# the package would point /etc/resolv.conf at a resolver that this machine does not run. The
# test runs it without systemd, in a private mount namespace. Its library comes from the same
# release, so the two always match.
resolved=target/systemd-resolved
if [ ! -x "$resolved/lib/systemd/systemd-resolved" ]; then
  debs=$(mktemp -d) && chmod 777 "$debs"  # apt downloads as its own user
  (cd "$debs" && { apt-get download -qq systemd-resolved libsystemd-shared ||
    { apt-get update -qq && apt-get download -qq systemd-resolved libsystemd-shared; }; })
  mkdir -p "$resolved"  # dpkg -x makes the last directory only, and a clean clone has no target/
  for deb in "$debs"/*.deb; do dpkg -x "$deb" "$resolved"; done
  rm -rf "$debs"
fi
# The Python clients of tests/it/clients.rs (py-consul, the design documents' aiohttp client), pinned
# in tests/clients/requirements.txt, in a venv of their own.
venv=target/client-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -r tests/clients/requirements.txt

# Playwright's library (playwright-core, pinned in tests/browser/package-lock.json; it drives the
# Chromium above and downloads no browser of its own), in a folder of its own.
browser=target/browser
if ! cmp -s tests/browser/package-lock.json "$browser/package-lock.json" ||
  [ ! -f "$browser/node_modules/playwright-core/package.json" ]; then
  mkdir -p "$browser"
  cp tests/browser/package.json tests/browser/package-lock.json "$browser/"
  (cd "$browser" && npm ci --no-audit --no-fund --loglevel=error)
fi
# The npm consul client that tests/it/clients.rs runs on Node.js (pinned in
# tests/node-consul/package-lock.json), in a folder of its own.
node_consul=target/node-consul
if ! cmp -s tests/node-consul/package-lock.json "$node_consul/package-lock.json" ||
  [ ! -f "$node_consul/node_modules/consul/package.json" ]; then
  mkdir -p "$node_consul"
  cp tests/node-consul/package.json tests/node-consul/package-lock.json "$node_consul/"
  (cd "$node_consul" && npm ci --no-audit --no-fund --loglevel=error)
fi
installed=$(rustup component list --installed 2>/dev/null || true)
for component in rustfmt clippy; do
  grep -q "^$component" <<<"$installed" || rustup component add "$component"
done

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --benches --locked            # each benchmark runs once: it still works
cargo build --examples --locked           # tests/it/client.rs runs them
cargo test --doc --locked                 # the client library's documented examples compile (and run where they can)
cargo test --lib --bins --tests --locked  # the test suite (its summary closes the output)
