#!/usr/bin/env bash
# Memory at rest: RSS (and its anonymous part) of the release binary serving the
# shipped config 2 s after start, 2 s after five 4 MiB chat requests to the offline
# echo provider, and again 13 s later after one small request. Reads
# /proc/PID/smaps_rollup.
# Usage: bench/rss.sh
set -euo pipefail
cd "$(dirname "$0")/.."
addr=127.0.0.1:9151
# The build to measure (LLMHUB_BIN, PROFILE=dist): see bench/bin.sh.
. bench/bin.sh
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
cp -r hub.toml providers.d tools.d servers.d "$work/"
sed -i "s/^listen = .*/listen = \"$addr\"/" "$work/hub.toml"
grep -q "^listen = \"$addr\"" "$work/hub.toml" || { echo "hub.toml has no listen line to rewrite" >&2; exit 1; }
RUST_LOG=warn "$bin" serve --config "$work/hub.toml" &
pid=$!
for _ in $(seq 100); do curl -fs -o /dev/null "http://$addr/health" && break; sleep 0.05; done
mem() { awk '/^Rss:/ {r=$2} /^Anonymous:/ {a=$2} END {printf "RSS %6.1f MB (anonymous %5.1f MB)", r/1024, a/1024}' "/proc/$pid/smaps_rollup"; }
sleep 2
echo "idle:                      $(mem)"
python3 - "$work/big.json" <<'PY'
import json, sys
# Just under the shipped max_body_bytes (4 MiB) with the JSON around it.
text = ("lorem ipsum dolor sit amet " * (4 * 1024 * 1024 // 27 + 1))[: 4 * 1024 * 1024 - 200]
json.dump({"model": "echo", "messages": [{"role": "user", "content": text}]}, open(sys.argv[1], "w"))
PY
for i in 1 2 3 4 5; do
  curl -fs -o /dev/null -H 'content-type: application/json' --data-binary @"$work/big.json" "http://$addr/v1/chat/completions" \
    || { echo "the 4 MiB request failed" >&2; exit 1; }
done
sleep 2
echo "after 5 x 4 MiB requests:  $(mem)"
# mimalloc returns freed pages to the OS after a delay, checked when it next allocates.
sleep 10
curl -fs -o /dev/null "http://$addr/health"
sleep 1
echo "13 s later, one request on: $(mem)"
