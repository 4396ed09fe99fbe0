#!/usr/bin/env bash
# hookside against nginx and HAProxy, side by side, on loopback.
# Run with: bash bench/run.sh [ROUNDS] [SECONDS]      (defaults: 5 rounds of 5 s per test)
# Installs what it needs (Debian's nginx, haproxy, wrk, valgrind, openssl; oha from crates.io,
# cached in ~/.cargo/bin), builds hookside in release mode with the committed profile
# (pgo.profdata, as the Dockerfile does), then runs bench/run.py.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
# The arguments are checked before the long steps: a typo fails at once, and --help is only
# help. (Once more after the packages, in case python3 itself was missing.)
check_args() {
  case " $* " in *" -h "* | *" --help "*) exec python3 bench/run.py --help ;; esac
  python3 bench/run.py --check-args "$@"
}
if command -v python3 >/dev/null 2>&1; then check_args "$@"; fi
need=()
for tool in nginx haproxy wrk valgrind python3 taskset openssl; do
  command -v "$tool" >/dev/null 2>&1 || command -v "/usr/sbin/$tool" >/dev/null 2>&1 || need+=("$tool")
done
if [ ${#need[@]} -gt 0 ]; then
  pkgs=("${need[@]/taskset/util-linux}")
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi
check_args "$@"
command -v oha >/dev/null 2>&1 || cargo install oha --locked   # about 11 minutes, once
# target/pgo keeps these builds apart from plain ones (other RUSTFLAGS rebuild everything);
# build.rs warns when the compiler is not the one pgo-rustc.txt names.
RUSTFLAGS="-Cprofile-use=$PWD/pgo.profdata" cargo build --release --locked --bin hookside --target-dir target/pgo
cargo build --release --locked --bin hookside --no-default-features --target-dir target/system-alloc
exec python3 bench/run.py "$@"
