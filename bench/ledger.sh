#!/usr/bin/env bash
# The ledger's cost on the request path: two llmhub servers in front of the same mock,
# one recording every request into its SQLite ledger, one with `[storage] ledger =
# false`, measured alternately with wrk at 16 connections (non-streaming), all on
# 127.0.0.1. Then the usage query on a 1,000,000-row ledger.
# Usage: bench/ledger.sh [seconds per run, default 10] [rounds, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
rounds=${2:-3}
mock_addr=127.0.0.1:9111
on_addr=127.0.0.1:9112
off_addr=127.0.0.1:9113

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 1; }
cargo build --release --quiet --bin llmhub --example mock_upstream --example usage_query

work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

for which in on off; do
  mkdir -p "$work/$which/providers.d"
  addr=$on_addr; [ "$which" = off ] && addr=$off_addr
  ledger=true; [ "$which" = off ] && ledger=false
  cat > "$work/$which/hub.toml" <<TOML
[server]
listen = "$addr"
[routing]
default_model = "mock/bench-model"
[storage]
ledger = $ledger
TOML
  cat > "$work/$which/providers.d/mock.toml" <<TOML
base_url = "http://$mock_addr/v1"
[models.bench-model]
cost_input_per_1m = 1.0
cost_output_per_1m = 2.0
TOML
done

target/release/examples/mock_upstream "$mock_addr" >/dev/null &
pids+=($!)
RUST_LOG=warn target/release/llmhub serve --config "$work/on/hub.toml" &
pids+=($!)
RUST_LOG=warn target/release/llmhub serve --config "$work/off/hub.toml" &
pids+=($!)

wait_up() { for _ in $(seq 100); do curl -fs -o /dev/null -X POST "$1" -d '{"messages":[{"role":"user","content":"x"}]}' && return; sleep 0.05; done; echo "no answer from $1" >&2; exit 1; }
wait_up "http://$mock_addr/v1/chat/completions"
wait_up "http://$on_addr/v1/chat/completions"
wait_up "http://$off_addr/v1/chat/completions"

run() { # name url
  local out="$work/$1.txt"
  wrk -t1 -c16 -d"${secs}s" --latency -s bench/post.lua "$2" > "$out"
  local rps p50
  rps=$(awk '/Requests\/sec/ {print $2}' "$out")
  p50=$(awk '$1=="50%" {print $2}' "$out")
  printf '%-22s %12s req/s   p50 %s\n' "$1" "$rps" "$p50"
}

echo "warm-up"
wrk -t1 -c4 -d2s -s bench/post.lua "http://$on_addr/v1/chat/completions" >/dev/null
wrk -t1 -c4 -d2s -s bench/post.lua "http://$off_addr/v1/chat/completions" >/dev/null
echo "== ${secs}s per run, 16 connections, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
for r in $(seq "$rounds"); do
  run "ledger off (round $r)" "http://$off_addr/v1/chat/completions"
  run "ledger on  (round $r)" "http://$on_addr/v1/chat/completions"
done
curl -fs "http://$on_addr/health" | python3 -c 'import json,sys; l=json.load(sys.stdin)["ledger"]; print("ledger:", l["written"], "written,", l["dropped"], "dropped,", l["queued"], "queued")'

echo "== usage query on a 1,000,000-row SQLite ledger"
target/release/examples/usage_query 1000000 "$work/bench.db"
