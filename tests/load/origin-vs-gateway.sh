#!/usr/bin/env bash
# The Race Dashboard's own server (the origin) and paddock's Socket.IO gateway
# under the same load, one after the other (docs/BENCHMARKS.md, "Socket.IO: the
# gateway beside the origin"). Each load runs after a warm-up; one JSON line per
# load goes to /tmp/gwrun/results.jsonl.
#
#   tests/load/origin-vs-gateway.sh          # the Rust load: latency, ceilings, fan-out
#   GENERATOR=python tests/load/origin-vs-gateway.sh   # python-socketio, as the origin's monitor
#
# Needs: the origin checked out at /tmp/origin (fetch github 1Lap/dashboard), a
# venv at /tmp/origin-venv with its requirements.txt (and, for the Python load,
# python-socketio[client] and websocket-client); nats-server on PATH;
# `cargo build --release --bin paddock --example socketio_load`.
set -u
cd "$(dirname "$0")"
ROOT="$PWD/../.."
PADDOCK="$ROOT/target/release/paddock"
RUST_LOAD="$ROOT/target/release/examples/socketio_load"
PY=/tmp/origin-venv/bin/python
GENERATOR=${GENERATOR:-rust}
mkdir -p /tmp/gwrun
out=/tmp/gwrun/results.jsonl
: > $out
# Pages and monitors are sockets of this process: 1,001 of them for the widest fan-out.
ulimit -n 65536 2>/dev/null || true

# One load: label, server, url, monitors, Hz, pages per monitor.
load() {
  local label=$1 server=$2 url=$3 m=$4 hz=$5 pages=$6 r
  if [ "$GENERATOR" = rust ]; then
    r=$("$RUST_LOAD" --url "$url" --monitors "$m" --hz "$hz" --pages "$pages" \
      --seconds 10 --warmup 2 --drain 3 2>/tmp/gwrun/$server-$label.err)
  else
    local procs=$(( m >= 40 ? 2 : 1 ))
    r=$($PY socketio_load.py --server "$server" --url "$url" --monitors "$m" --hz "$hz" \
      --processes $procs --seconds 15 --warmup 3 2>/tmp/gwrun/$server-$label.err)
  fi
  [ -n "$r" ] || r='{"error":"see /tmp/gwrun/'"$server-$label"'.err"}'
  echo "{\"generator\":\"$GENERATOR\",\"server\":\"$server\",\"load\":\"$label\",\"result\":$r}" >> $out
  echo "$server $label: $r"
}

latency_loads() {
  load 1000-per-s "$@" 10 100 1
  load 2000-per-s "$@" 20 100 1
  load 4000-per-s "$@" 40 100 1
  load 1x1000Hz "$@" 1 1000 1
}

# The origin, as its README runs it, debug off.
(cd /tmp/origin && DEBUG=False HOST=127.0.0.1 PORT=5000 exec $PY run.py > /tmp/gwrun/origin.log 2>&1) &
opid=$!
for i in $(seq 50); do curl -sf http://127.0.0.1:5000/ >/dev/null && break; sleep 0.2; done
latency_loads origin http://127.0.0.1:5000
if [ "$GENERATOR" = rust ]; then
  load 3000-per-s origin http://127.0.0.1:5000 30 100 1
fi
kill $opid; wait $opid 2>/dev/null

# paddock: its own broker, serve's defaults but one: the widest fan-out has
# 1,001 sockets, past the default --gateway-max-connections 1000.
rm -rf /tmp/gwrun/js; mkdir -p /tmp/gwrun/js
nats-server -a 127.0.0.1 -p 4333 -js -sd /tmp/gwrun/js > /tmp/gwrun/nats.log 2>&1 &
npid=$!
sleep 1
"$PADDOCK" serve --nats-url nats://127.0.0.1:4333 --http-addr 127.0.0.1:8099 \
  --gateway-max-connections 2000 > /tmp/gwrun/paddock.log 2>&1 &
ppid=$!
for i in $(seq 50); do curl -sf http://127.0.0.1:8099/readyz >/dev/null && break; sleep 0.2; done
latency_loads paddock http://127.0.0.1:8099
if [ "$GENERATOR" = rust ]; then
  # The ceiling: the highest load whose frames all arrive.
  load 8000-per-s paddock http://127.0.0.1:8099 100 80 1
  load 16000-per-s paddock http://127.0.0.1:8099 200 80 1
  load 24000-per-s paddock http://127.0.0.1:8099 200 120 1
  load 32000-per-s paddock http://127.0.0.1:8099 200 160 1
  # Fan-out: one car at 20 Hz, followed by 1 to 1,000 pages.
  for pages in 1 10 100 1000; do
    load "fanout-1x$pages" paddock http://127.0.0.1:8099 1 20 $pages
  done
fi
kill -INT $ppid; wait $ppid 2>/dev/null
kill $npid; wait $npid 2>/dev/null
