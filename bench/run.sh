#!/usr/bin/env bash
# Load benchmark: the mock upstream directly, then the same mock through llmhub,
# non-streaming, with wrk, all on 127.0.0.1. Prints wrk's reports and a summary.
# Usage: bench/run.sh [seconds per run, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
mock_addr=127.0.0.1:9101
hub_addr=127.0.0.1:9100

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 1; }
cargo build --release --quiet --bin llmhub --example mock_upstream

work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

mkdir -p "$work/providers.d"
cat > "$work/hub.toml" <<TOML
[server]
listen = "$hub_addr"
[routing]
default_model = "mock/bench-model"
TOML
cat > "$work/providers.d/mock.toml" <<TOML
base_url = "http://$mock_addr/v1"
models = ["bench-model"]
TOML

target/release/examples/mock_upstream "$mock_addr" >/dev/null &
pids+=($!)
RUST_LOG=warn target/release/llmhub serve --config "$work/hub.toml" &
pids+=($!)

wait_up() { for _ in $(seq 100); do curl -fs -o /dev/null -X POST "$1" -d '{"messages":[{"role":"user","content":"x"}]}' && return; sleep 0.05; done; echo "no answer from $1" >&2; exit 1; }
wait_up "http://$mock_addr/v1/chat/completions"
wait_up "http://$hub_addr/v1/chat/completions"

run() { # name url connections threads
  local out="$work/$1.txt"
  wrk -t"$4" -c"$3" -d"${secs}s" --latency -s bench/post.lua "$2" > "$out"
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' "$out")
  p50=$(awk '$1=="50%" {print $2}' "$out")
  p99=$(awk '$1=="99%" {print $2}' "$out")
  printf '%-28s %12s req/s   p50 %-9s p99 %s\n' "$1" "$rps" "$p50" "$p99"
}

echo "warm-up"; wrk -t1 -c4 -d2s -s bench/post.lua "http://$hub_addr/v1/chat/completions" >/dev/null
echo "== ${secs}s per run, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
run "direct   1 connection"  "http://$mock_addr/v1/chat/completions" 1 1
run "llmhub   1 connection"  "http://$hub_addr/v1/chat/completions" 1 1
run "direct  32 connections" "http://$mock_addr/v1/chat/completions" 32 2
run "llmhub  32 connections" "http://$hub_addr/v1/chat/completions" 32 2
