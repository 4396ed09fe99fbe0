#!/usr/bin/env bash
# hookside's metrics checked by a real Prometheus (Debian's `prometheus` package):
#   promtool check metrics on a real scrape, promtool check rules on examples/alerts.yml,
#   promtool check config on examples/prometheus.yml adjusted to a local target, then a
#   Prometheus server on loopback scrapes hookside while invocations run, and its HTTP
#   query API must return the expected series.
# Loopback only; bounded (about 30 s). Run with: bash scripts/prometheus-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() { # URL, seconds
  for _ in $(seq 1 $(($2 * 10))); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "timed out waiting for $1" >&2; return 1
}
fail() { echo "FAILED: $*" >&2; exit 1; }

cargo build --quiet --locked --bin hookside --example upstream
upstream_port=$(free_port); bot_port=$(free_port); admin_port=$(free_port); prom_port=$(free_port)

mkdir -p "$work/examples"
cp -r webhooks.d "$work/webhooks.d"
cp -r examples/secrets "$work/examples/secrets"
find "$work/webhooks.d" -name '*.toml' -exec sed -i "s/127.0.0.1:8900/127.0.0.1:$upstream_port/g" {} +

target/debug/examples/upstream "127.0.0.1:$upstream_port" 2>/dev/null & pids+=($!)
HOOKSIDE_DEMO_CRM_PASSWORD=crm-demo-password RUST_LOG=warn target/debug/hookside serve \
  --dir "$work/webhooks.d" --listen "127.0.0.1:$bot_port" --admin-listen "127.0.0.1:$admin_port" & pids+=($!)
wait_for "http://127.0.0.1:$admin_port/readyz" 20

invoke() { curl -fsS -o /dev/null "http://127.0.0.1:$bot_port/v1/webhooks/$1" -d "$2"; }
order='{"sessionId": "s-1", "extractedData": {"orderId": "A-17"}}'
for _ in $(seq 1 5); do invoke order-status "$order"; invoke crm-lookup '{}'; done

echo "== promtool check metrics (a real scrape)"
curl -fsS "http://127.0.0.1:$admin_port/metrics" > "$work/metrics.txt"
promtool check metrics < "$work/metrics.txt" || fail "promtool check metrics"

echo "== promtool check rules examples/alerts.yml"
promtool check rules examples/alerts.yml

echo "== promtool check config (examples/prometheus.yml adjusted to a local target)"
# Debian's Prometheus has no Kubernetes service discovery: keep the job, the path and the
# rules, and point the job at the local sidecar.
cat > "$work/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $root/examples/alerts.yml
scrape_configs:
  - job_name: hookside
    metrics_path: $(python3 -c "import re,sys; print(re.search(r'metrics_path: (\S+)', open('examples/prometheus.yml').read()).group(1))")
    static_configs:
      - targets: ["127.0.0.1:$admin_port"]
YAML
promtool check config "$work/prometheus.yml"

echo "== a real Prometheus scraping hookside"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
  --web.listen-address="127.0.0.1:$prom_port" --log.level=warn 2>"$work/prometheus.log" & pids+=($!)
wait_for "http://127.0.0.1:$prom_port/-/ready" 20 || { cat "$work/prometheus.log"; exit 1; }
# Steady traffic over several scrapes, so rate() has samples to work with (about 8 s).
for _ in $(seq 1 40); do invoke order-status "$order"; sleep 0.2; done

query() { curl -fsS "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode "query=$1"; }
check() { # QUERY, PYTHON CHECK OVER `result`
  for _ in $(seq 1 20); do
    if query "$1" | python3 -c "import json,sys; result = json.load(sys.stdin)['data']['result']; sys.exit(0 if ($2) else 1)"; then
      echo "ok: $1"; return 0
    fi
    sleep 0.5
  done
  query "$1"; echo; fail "$1"
}
check 'hookside_webhook_requests_total{webhook="order-status", outcome="ok"}' \
  'len(result) == 1 and result[0]["metric"]["company"] == "acme" and float(result[0]["value"][1]) >= 45'
check 'hookside_webhook_requests_total{webhook="crm-lookup", company="globex", outcome="ok"}' \
  'len(result) == 1 and float(result[0]["value"][1]) == 5'
check 'histogram_quantile(0.95, sum by (le, webhook) (rate(hookside_webhook_request_duration_seconds_bucket{webhook="order-status"}[5s])))' \
  'len(result) == 1 and result[0]["metric"]["webhook"] == "order-status" and 0 < float(result[0]["value"][1]) < 1'
check 'hookside_config_last_reload_successful' 'len(result) == 1 and result[0]["value"][1] == "1"'
check 'hookside:webhook_requests:rate5m{webhook="order-status", outcome="ok"}' 'len(result) == 1 and float(result[0]["value"][1]) > 0'
echo "prometheus check: all passed"
