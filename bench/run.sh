#!/usr/bin/env bash
# hookside against nginx and HAProxy, side by side, on loopback.
# Run with: bash bench/run.sh [ROUNDS] [SECONDS]      (defaults: 5 rounds of 5 s per test)
# Installs what it needs (Debian's nginx, haproxy, wrk, valgrind; oha from crates.io,
# cached in ~/.cargo/bin), builds hookside in release mode with the committed profile
# (pgo.profdata, as the Dockerfile does), then runs bench/run.py.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
need=()
for tool in nginx haproxy wrk valgrind python3 taskset; do
  command -v "$tool" >/dev/null 2>&1 || command -v "/usr/sbin/$tool" >/dev/null 2>&1 || need+=("$tool")
done
if [ ${#need[@]} -gt 0 ]; then
  pkgs=("${need[@]/taskset/util-linux}")
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi
command -v oha >/dev/null 2>&1 || cargo install oha --locked   # about 11 minutes, once
# target/pgo keeps these builds apart from plain ones (other RUSTFLAGS rebuild everything).
# rustc builds even when it cannot use the profile, so say when the compiler is not the one
# that wrote it (its names, and maybe its format, differ: little or none of it applies).
if [ "$(rustc --version)" != "$(cat pgo-rustc.txt)" ]; then
  echo "bench: pgo.profdata was written for $(cat pgo-rustc.txt), this is $(rustc --version):" >&2
  echo "bench: little of it will apply; python3 bench/pgo.py writes one for this compiler." >&2
fi
RUSTFLAGS="-Cprofile-use=$PWD/pgo.profdata" cargo build --release --locked --bin hookside --target-dir target/pgo
cargo build --release --locked --bin hookside --no-default-features --target-dir target/system-alloc
exec python3 bench/run.py "$@"
