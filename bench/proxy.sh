#!/usr/bin/env bash
# llmhub against the physical limit of a proxy on this machine: nginx serves a fixed
# 305-byte chat.completion (the upstream); the same request goes to it directly, through
# nginx `proxy_pass` (keepalive upstream) and through llmhub; wrk -t1, non-streaming,
# at 1 and 16 connections, all on 127.0.0.1. Then streaming: nginx serves a 1,000-chunk
# SSE reply; time to first byte (median of 200 curl runs) and whole streams per second
# (wrk -c16) directly, through nginx and through llmhub. Prints each row and the ratios
# of one run.
#
# nginx proxies twice. "nginx proxy" is a second nginx of its own, as llmhub is: every
# request crosses from the proxy's process to the upstream's and back. "nginx proxy,
# same process" is a server block of the upstream's own nginx: its workers often
# answer their own upstream request in the same event loop, a hop with no wake-up that
# no separate proxy can have (the reference of the first measurements, kept for
# comparison).
# Usage: bench/proxy.sh [seconds per run, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
up_port=9131
proxy_port=9132
hub_addr=127.0.0.1:9133
stream_port=9134
stream_proxy_port=9135
own_proxy_port=9136
own_stream_proxy_port=9137

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 1; }
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { echo "nginx is needed: apt-get install -y nginx-light" >&2; exit 1; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
# The build to measure (LLMHUB_BIN, PROFILE=dist): see bench/bin.sh.
. bench/bin.sh

work=$(mktemp -d)
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  "$NGINX" -p "$work" -c nginx.conf -s stop 2>/dev/null || true
  "$NGINX" -p "$work/proxy" -c nginx.conf -s stop 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

. bench/upstream.sh
mkdir -p "$work/logs" "$work/static"
# nginx's workers (a user other than root) read the SSE file.
chmod 755 "$work" "$work/static"
# 1,000 chunks of a few words each, then a finish_reason chunk, a usage chunk and [DONE]:
# OpenAI's shape when usage is asked for (llmhub always asks), `"usage":null` in every
# chunk but the last.
for i in $(seq 1000); do
  printf 'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1760000000,"model":"bench-model","choices":[{"index":0,"delta":{"content":"word %d "},"finish_reason":null}],"usage":null}\n\n' "$i"
done > "$work/static/chunks.sse"
printf 'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1760000000,"model":"bench-model","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}\n\n' >> "$work/static/chunks.sse"
printf 'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1760000000,"model":"bench-model","choices":[],"usage":{"prompt_tokens":19,"completion_tokens":1000,"total_tokens":1019}}\n\ndata: [DONE]\n\n' >> "$work/static/chunks.sse"
# nginx.conf around the blocks of its http section ($1).
nginx_conf() {
  printf 'worker_processes auto;\nerror_log logs/error.log warn;\npid logs/nginx.pid;\nevents { worker_connections 1024; }\nhttp {\n  access_log off;\n%s}\n' "$1"
}
# A proxy of the chat upstream on port $1 and of the stream upstream on port $2.
proxies() {
  cat <<BLOCKS
  upstream up { server 127.0.0.1:$up_port; keepalive 64; }
  server {
    listen 127.0.0.1:$1;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
  upstream stream_up { server 127.0.0.1:$stream_port; keepalive 64; }
  server {
    listen 127.0.0.1:$2;
    location / { proxy_pass http://stream_up; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }
  }
BLOCKS
}
upstreams=$(cat <<BLOCKS
  server {
    listen 127.0.0.1:$up_port;
    location / { default_type application/json; return 200 '$reply'; }
  }
  server {
    listen 127.0.0.1:$stream_port;
    # Any POST gets the SSE file (the static module answers POST with 405; turn it into the file).
    location / { root $work/static; default_type text/event-stream; try_files /chunks.sse =404; error_page 405 =200 \$uri; }
  }
BLOCKS
)
nginx_conf "$upstreams
$(proxies "$proxy_port" "$stream_proxy_port")
" > "$work/nginx.conf"
"$NGINX" -p "$work" -c nginx.conf
mkdir -p "$work/proxy/logs"
nginx_conf "$(proxies "$own_proxy_port" "$own_stream_proxy_port")
" > "$work/proxy/nginx.conf"
"$NGINX" -p "$work/proxy" -c nginx.conf

hub_config "$work/hub" "$hub_addr" "$up_port"
cat > "$work/hub/providers.d/stream.toml" <<TOML
base_url = "http://127.0.0.1:$stream_port/v1"
models = ["bench-model"]
TOML
RUST_LOG=warn "$bin" serve --config "$work/hub/hub.toml" &
pids+=($!)

wait_up() { for _ in $(seq 100); do curl -fs -o /dev/null -X POST "$1" -d '{"messages":[{"role":"user","content":"x"}]}' && return; sleep 0.05; done; echo "no answer from $1" >&2; exit 1; }
direct="http://127.0.0.1:$up_port/v1/chat/completions"
proxied="http://127.0.0.1:$own_proxy_port/v1/chat/completions"
same="http://127.0.0.1:$proxy_port/v1/chat/completions"
hub="http://$hub_addr/v1/chat/completions"
for u in "$direct" "$proxied" "$same" "$hub"; do wait_up "$u"; done
# Every route must return the upstream's reply, or the rows measure errors.
for u in "$direct" "$proxied" "$same" "$hub"; do
  curl -fs -X POST "$u" -d '{"model":"mock/bench-model","messages":[{"role":"user","content":"x"}]}' | grep -q 'assist you today' \
    || { echo "$u does not return the upstream's reply" >&2; exit 1; }
done

declare -A rps p50
run() { # name url connections
  local out="$work/$1.txt"
  wrk -t1 -c"$3" -d"${secs}s" --latency -s bench/post.lua "$2" > "$out"
  rps[$1]=$(awk '/Requests\/sec/ {print $2}' "$out")
  p50[$1]=$(awk '$1=="50%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v)} else if (v ~ /ms$/) {sub(/ms$/,"",v); v=v*1000} print v}' "$out")
  local bad
  bad=$(awk '/Non-2xx/ {print $5}' "$out")
  printf '%-22s %12s req/s   p50 %8.1f us%s\n' "$1" "${rps[$1]}" "${p50[$1]}" "${bad:+   NON-2XX: $bad}"
}

for u in "$direct" "$proxied" "$same" "$hub"; do wrk -t1 -c4 -d2s -s bench/post.lua "$u" >/dev/null; done
echo "== ${secs}s per run, wrk -t1, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
run "direct c1" "$direct" 1
run "nginx proxy c1" "$proxied" 1
run "nginx same-proc c1" "$same" 1
run "llmhub c1" "$hub" 1
run "direct c16" "$direct" 16
run "nginx proxy c16" "$proxied" 16
run "nginx same-proc c16" "$same" 16
run "llmhub c16" "$hub" 16
awk -v h="${rps[llmhub c16]}" -v n="${rps[nginx proxy c16]}" -v s="${rps[nginx same-proc c16]}" 'BEGIN { printf "throughput at 16 connections: llmhub / nginx proxy_pass = %.2f (target >= 0.85); / same-process nginx %.2f\n", h / n, h / s }'
awk -v d="${p50[direct c1]}" -v n="${p50[nginx proxy c1]}" -v s="${p50[nginx same-proc c1]}" -v h="${p50[llmhub c1]}" 'BEGIN { printf "added p50 at 1 connection: nginx +%.1f us, llmhub +%.1f us (target: llmhub <= nginx + 25); same-process nginx +%.1f us\n", n - d, h - d, s - d }'

# ---- streaming: 1,000 chunks -------------------------------------------------------
stream_body='{"model":"stream/bench-model","stream":true,"messages":[{"role":"user","content":"Hello!"}]}'
s_direct="http://127.0.0.1:$stream_port/v1/chat/completions"
s_proxied="http://127.0.0.1:$own_stream_proxy_port/v1/chat/completions"
s_same="http://127.0.0.1:$stream_proxy_port/v1/chat/completions"
for u in "$s_direct" "$s_proxied" "$s_same" "$hub"; do
  n=$(curl -fsN -X POST "$u" -H 'content-type: application/json' -d "$stream_body" | grep -c '"content":"word')
  [ "$n" = 1000 ] || { echo "$u streamed $n content chunks, not 1000" >&2; exit 1; }
done
declare -A ttfb srps
first_byte() { # name url: median time to first byte of 200 streams, in us
  local t
  t=$(for _ in $(seq 200); do curl -s -o /dev/null -w '%{time_starttransfer}\n' -X POST "$2" -H 'content-type: application/json' -d "$stream_body"; done \
    | sort -n | awk '{v[NR]=$1} END {printf "%.0f", v[int((NR+1)/2)] * 1e6}')
  ttfb[$1]=$t
}
streams() { # name url
  local out="$work/$1.txt"
  STREAM_BODY="$stream_body" wrk -t1 -c16 -d"${secs}s" -s bench/post_stream.lua "$2" > "$out"
  srps[$1]=$(awk '/Requests\/sec/ {print $2}' "$out")
}
for row in "direct:$s_direct" "nginx proxy:$s_proxied" "nginx same-proc:$s_same" "llmhub:$hub"; do
  name=${row%%:*}; url=${row#*:}
  first_byte "$name" "$url"
  streams "$name" "$url"
  printf '%-22s first byte p50 %6s us   1000-chunk streams at c16 %10s/s\n' "stream $name" "${ttfb[$name]}" "${srps[$name]}"
done
awk -v d="${ttfb[direct]}" -v n="${ttfb[nginx proxy]}" -v s="${ttfb[nginx same-proc]}" -v h="${ttfb[llmhub]}" 'BEGIN { printf "streaming first byte: nginx +%d us, llmhub +%d us over direct (target: llmhub <= +50); same-process nginx +%d us\n", n - d, h - d, s - d }'
awk -v n="${srps[nginx proxy]}" -v s="${srps[nginx same-proc]}" -v h="${srps[llmhub]}" 'BEGIN { printf "1000-chunk streams at 16 connections: llmhub / nginx proxy_pass = %.2f (target >= 0.8); / same-process nginx %.2f\n", h / n, h / s }'
