#!/usr/bin/env bash
# The Race Dashboard's own server (the origin) and paddock's Socket.IO gateway
# under the same python-socketio load, one after the other (docs/BENCHMARKS.md,
# "Socket.IO: the gateway beside the origin"). Each load runs 15 s after a 3 s
# warm-up. Needs: the origin checked out at /tmp/origin, a venv at
# /tmp/origin-venv with its requirements.txt and python-socketio[client],
# websocket-client; nats-server on PATH; `cargo build --release`.
set -u
cd "$(dirname "$0")"
PADDOCK="$PWD/../../target/release/paddock"
PY=/tmp/origin-venv/bin/python
LOAD="$PWD/socketio_load.py"
mkdir -p /tmp/gwrun
out=/tmp/gwrun/results.jsonl
: > $out
loads=("10 100 1" "20 100 1" "40 100 2" "1 1000 1")
run_loads() {
  local server=$1 url=$2
  for l in "${loads[@]}"; do
    set -- $l
    r=$($PY $LOAD --server $server --url $url --monitors $1 --hz $2 --processes $3 --seconds 15 --warmup 3 2>/tmp/gwrun/$server-$1-$2.err)
    echo "{\"load\":\"$1x$2\",\"result\":$r}" >> $out
    echo "$server $1x$2: $r"
  done
}
# The origin, as its README runs it, debug off.
(cd /tmp/origin && DEBUG=False HOST=127.0.0.1 PORT=5000 exec $PY run.py > /tmp/gwrun/origin.log 2>&1) &
opid=$!
sleep 3
run_loads origin http://127.0.0.1:5000
kill $opid; wait $opid 2>/dev/null
# paddock: its own broker, serve's defaults.
rm -rf /tmp/gwrun/js; mkdir -p /tmp/gwrun/js
nats-server -a 127.0.0.1 -p 4333 -js -sd /tmp/gwrun/js > /tmp/gwrun/nats.log 2>&1 &
npid=$!
sleep 1
"$PADDOCK" serve --nats-url nats://127.0.0.1:4333 --http-addr 127.0.0.1:8099 > /tmp/gwrun/paddock.log 2>&1 &
ppid=$!
for i in $(seq 50); do curl -sf http://127.0.0.1:8099/readyz >/dev/null && break; sleep 0.2; done
run_loads paddock http://127.0.0.1:8099
kill -INT $ppid; wait $ppid 2>/dev/null
kill $npid; wait $npid 2>/dev/null
