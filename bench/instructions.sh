#!/usr/bin/env bash
# Instructions per proxied request: llmhub under callgrind in front of an nginx upstream
# (the same fixed 305-byte chat.completion as bench/proxy.sh), wrk at one connection.
# Counts instructions, not seconds, so two builds compare on this shared, noisy machine
# (the same build gives the same count within about 1 %). Prints the total per request
# and the functions of llmhub's own request path that cost the most, inclusive.
# Usage: bench/instructions.sh [seconds]   (LLMHUB_BIN=path or PROFILE=dist: bench/bin.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install -y valgrind" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 1; }
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { echo "nginx is needed: apt-get install -y nginx-light" >&2; exit 1; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
# The build to measure (LLMHUB_BIN, PROFILE=dist): see bench/bin.sh.
. bench/bin.sh

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
up_port=$(free_port)
hub_addr=127.0.0.1:$(free_port)
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; "$NGINX" -p "$work" -c nginx.conf -s stop 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

. bench/upstream.sh
mkdir -p "$work/logs"
cat > "$work/nginx.conf" <<CONF
worker_processes 1;
error_log logs/error.log warn;
pid logs/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  server { listen 127.0.0.1:$up_port; location / { default_type application/json; return 200 '$reply'; } }
}
CONF
"$NGINX" -p "$work" -c nginx.conf
hub_config "$work/hub" "$hub_addr" "$up_port"

out="$work/callgrind.out"
# Instrumentation starts after start-up, and the counts are zeroed after a warm-up.
RUST_LOG=warn valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
  "$bin" serve --config "$work/hub/hub.toml" > "$work/hub.log" 2>&1 &
pid=$!
url="http://$hub_addr/v1/chat/completions"
for _ in $(seq 200); do curl -fs -o /dev/null -X POST "$url" -d '{"messages":[{"role":"user","content":"x"}]}' && break; sleep 0.1; done
curl -fs -X POST "$url" -d '{"model":"mock/bench-model","messages":[{"role":"user","content":"x"}]}' | grep -q 'assist you today' \
  || { echo "llmhub does not return the upstream's reply" >&2; exit 1; }
callgrind_control -i on "$pid" >/dev/null
wrk -t1 -c1 -d3s -s bench/post.lua "$url" >/dev/null
callgrind_control -z "$pid" >/dev/null
n=$(wrk -t1 -c1 -d"${secs}s" -s bench/post.lua "$url" | awk '/requests in/ {print $1}')
callgrind_control -d "$pid" >/dev/null
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
dump=$(ls "$out".* | head -n 1)
total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "== $(basename "$bin"), $n requests at 1 connection, $(date -u +%Y-%m-%dT%H:%MZ)"
echo "instructions per request: $((total / n))"
echo "-- llmhub's own functions, inclusive, per request (>= 500)"
callgrind_annotate --inclusive=yes "$dump" 2>/dev/null \
  | awk -v n="$n" '/\/work\/|src\// && /llmhub::/ { v=$1; gsub(",", "", v); v=int(v / n); if (v >= 500) { name=$0; sub(/.*llmhub::/, "llmhub::", name); sub(/ \[.*/, "", name); if (!seen[name]++) printf "%8d  %s\n", v, name } }' \
  | head -n 25
