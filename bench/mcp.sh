#!/usr/bin/env bash
# MCP aggregation overhead: one llmhub serves /mcp (the backend, echo provider), a
# second aggregates it from servers.d; wrk POSTs `tools/call` of the backend's
# `list_models` on one initialized session, directly and through the aggregator
# (`back__list_models`), at 1 and 16 connections. Prints each row and the ratios of one run.
# (Servers log errors only: wrk cuts its last requests short, which rmcp warns about.)
# Usage: bench/mcp.sh [seconds per run, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
back_addr=127.0.0.1:9141
agg_addr=127.0.0.1:9142
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 1; }
# The build to measure (LLMHUB_BIN, PROFILE=dist): see bench/bin.sh.
. bench/bin.sh

work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

for side in back agg; do
  mkdir -p "$work/$side/providers.d" "$work/$side/servers.d"
  printf 'adapter = "echo"\nmodels = ["echo"]\n' > "$work/$side/providers.d/echo.toml"
done
printf '[server]\nlisten = "%s"\n[storage]\nledger = false\n' "$back_addr" > "$work/back/hub.toml"
printf '[server]\nlisten = "%s"\n[storage]\nledger = false\n' "$agg_addr" > "$work/agg/hub.toml"
printf 'url = "http://%s/mcp"\nprefix = "back"\n' "$back_addr" > "$work/agg/servers.d/back.toml"
RUST_LOG=error "$bin" serve --config "$work/back/hub.toml" & pids+=($!)
RUST_LOG=error "$bin" serve --config "$work/agg/hub.toml" & pids+=($!)

# initialize + initialized on an endpoint; prints the session id.
session() {
  local url=$1 id
  for _ in $(seq 100); do curl -fs -o /dev/null "${url%/mcp}/health" && break; sleep 0.05; done
  id=$(curl -fs -D - -o /dev/null "$url" -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \
    -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}' \
    | awk 'tolower($1)=="mcp-session-id:" {print $2}' | tr -d '\r')
  curl -fs -o /dev/null "$url" -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \
    -H "mcp-session-id: $id" -H 'mcp-protocol-version: 2025-06-18' -d '{"jsonrpc":"2.0","method":"notifications/initialized"}'
  echo "$id"
}
back_session=$(session "http://$back_addr/mcp")
agg_session=$(session "http://$agg_addr/mcp")
call() { # url session tool
  curl -fs "$1" -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' -H "mcp-session-id: $2" \
    -H 'mcp-protocol-version: 2025-06-18' -d "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":\"$3\",\"arguments\":{}}}"
}
# The aggregator connects to the backend in the background: wait until its tool answers.
for _ in $(seq 200); do call "http://$agg_addr/mcp" "$agg_session" back__list_models | grep -q '"isError":false' && break; sleep 0.05; done
for args in "http://$back_addr/mcp $back_session list_models" "http://$agg_addr/mcp $agg_session back__list_models"; do
  set -- $args
  call "$1" "$2" "$3" | grep -q 'echo' || { echo "$3 on $1 does not answer with the model list" >&2; exit 1; }
done

declare -A rps p50
run() { # name url session tool connections
  local out="$work/$1.txt"
  MCP_SESSION=$3 MCP_TOOL=$4 wrk -t1 -c"$5" -d"${secs}s" --latency -s bench/mcp_call.lua "$2" > "$out"
  rps[$1]=$(awk '/Requests\/sec/ {print $2}' "$out")
  p50[$1]=$(awk '$1=="50%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v)} else if (v ~ /ms$/) {sub(/ms$/,"",v); v=v*1000} print v}' "$out")
  local bad
  bad=$(awk '/Non-2xx/ {print $5}' "$out")
  printf '%-18s %12s calls/s   p50 %8.1f us%s\n' "$1" "${rps[$1]}" "${p50[$1]}" "${bad:+   NON-2XX: $bad}"
}
echo "== ${secs}s per run, wrk -t1, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
run "direct c1" "http://$back_addr/mcp" "$back_session" list_models 1
run "aggregated c1" "http://$agg_addr/mcp" "$agg_session" back__list_models 1
run "direct c16" "http://$back_addr/mcp" "$back_session" list_models 16
run "aggregated c16" "http://$agg_addr/mcp" "$agg_session" back__list_models 16
awk -v d="${p50[direct c1]}" -v a="${p50[aggregated c1]}" 'BEGIN { printf "added p50 at 1 connection: +%.1f us (target <= 150)\n", a - d }'
awk -v d="${rps[direct c16]}" -v a="${rps[aggregated c16]}" 'BEGIN { printf "rate at 16 connections: aggregated / direct = %.2f (target >= 0.6)\n", a / d }'
