#!/usr/bin/env bash
# The cost of limits on the request path: three llmhub servers in front of the same
# mock, one open (no keys), one with a limited key counted in process, one with the
# same key counted in a local redis-server, measured alternately with wrk at 16
# connections (non-streaming), all on 127.0.0.1. The limits are high enough never to
# refuse: what is measured is admitting and settling every request.
# Usage: bench/limits.sh [seconds per run, default 10] [rounds, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
rounds=${2:-3}
mock_addr=127.0.0.1:9121
redis_port=9125

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is needed: apt-get install -y redis-server" >&2; exit 1; }
cargo build --release --quiet --bin llmhub --example mock_upstream

work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
pids+=($!)

declare -A addr=([open]=127.0.0.1:9122 [memory]=127.0.0.1:9123 [redis]=127.0.0.1:9124)
for which in open memory redis; do
  mkdir -p "$work/$which/providers.d"
  storage="ledger = false"
  [ "$which" = redis ] && storage="$storage
redis_url_env = \"BENCH_REDIS_URL\""
  cat > "$work/$which/hub.toml" <<TOML
[server]
listen = "${addr[$which]}"
[routing]
default_model = "mock/bench-model"
[storage]
$storage
TOML
  cat > "$work/$which/providers.d/mock.toml" <<TOML
base_url = "http://$mock_addr/v1"
[models.bench-model]
cost_input_per_1m = 1.0
cost_output_per_1m = 2.0
TOML
done
key=$(target/release/llmhub keys new bench --config "$work/memory/hub.toml" 2>/dev/null)
cat >> "$work/memory/keys.d/bench.toml" <<TOML
rpm = 100000000
tpm = 100000000000
max_parallel = 10000
budget_usd = { day = 1000000.0, month = 1000000.0 }
TOML
cp -r "$work/memory/keys.d" "$work/redis/keys.d"

target/release/examples/mock_upstream "$mock_addr" >/dev/null &
pids+=($!)
for which in open memory redis; do
  BENCH_REDIS_URL="redis://127.0.0.1:$redis_port" RUST_LOG=warn \
    target/release/llmhub serve --config "$work/$which/hub.toml" &
  pids+=($!)
done

wait_up() { for _ in $(seq 100); do curl -fs -o /dev/null -X POST -H "Authorization: Bearer $key" "$1" -d '{"messages":[{"role":"user","content":"x"}]}' && return; sleep 0.05; done; echo "no answer from $1" >&2; exit 1; }
for which in open memory redis; do wait_up "http://${addr[$which]}/v1/chat/completions"; done

run() { # name which
  local out="$work/$1.txt"
  wrk -t1 -c16 -d"${secs}s" --latency -s bench/post.lua -H "Authorization: Bearer $key" \
    "http://${addr[$2]}/v1/chat/completions" > "$out"
  local rps p50 non2xx
  rps=$(awk '/Requests\/sec/ {print $2}' "$out")
  p50=$(awk '$1=="50%" {print $2}' "$out")
  non2xx=$(awk '/Non-2xx/ {print $5}' "$out")
  printf '%-26s %12s req/s   p50 %-9s %s\n' "$1" "$rps" "$p50" "${non2xx:+non-2xx: $non2xx}"
}

echo "warm-up"
for which in open memory redis; do
  wrk -t1 -c4 -d2s -s bench/post.lua -H "Authorization: Bearer $key" "http://${addr[$which]}/v1/chat/completions" >/dev/null
done
echo "== ${secs}s per run, 16 connections, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
for r in $(seq "$rounds"); do
  run "no keys        (round $r)" open
  run "key, in process (round $r)" memory
  run "key, Redis     (round $r)" redis
done
