#!/usr/bin/env bash
# Runs each fuzz target for a bounded time (default 60 s each). Not part of CI.
# Needs cargo-fuzz (cargo install cargo-fuzz); RUSTC_BOOTSTRAP lets the stable toolchain
# accept the sanitizer flags cargo-fuzz passes.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
export RUSTC_BOOTSTRAP=1
mkdir -p fuzz/corpus/load_file fuzz/corpus/render
cp webhooks.d/*/*.toml tests/fixtures/*/*.toml fuzz/corpus/load_file/ 2>/dev/null || true
printf '{"sessionId": "s", "extractedData": {"id": "../x"}, "reply": "a?b#c", "moduleId": 3}' > fuzz/corpus/render/seed.json
for target in load_file render; do
  echo "== $target for ${seconds}s"
  cargo fuzz run "$target" "fuzz/corpus/$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 2>&1 | tail -5
done
