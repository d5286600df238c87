#!/usr/bin/env bash
# Starts a 3-member etcd (Debian's etcd-server) and a 3-node Concord (its own redis-server) on
# loopback, runs the same acquire+release workload against both in one run, prints both and the
# ratio. Usage: scripts/bench-locks-vs-etcd.sh [duration_s] [concurrency]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
command -v etcd >/dev/null || { SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo; $SUDO apt-get install -y etcd-server etcd-client; }
DURATION=${1:-10}
CONC=${2:-64}
swift build -c release --product concord >/dev/null
BIN=.build/release/concord
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM

CLUSTER="e1=http://127.0.0.1:23801,e2=http://127.0.0.1:23802,e3=http://127.0.0.1:23803"
for i in 1 2 3; do
  etcd --name e$i --data-dir "$WORK/e$i" \
    --listen-client-urls http://127.0.0.1:2379$i --advertise-client-urls http://127.0.0.1:2379$i \
    --listen-peer-urls http://127.0.0.1:2380$i --initial-advertise-peer-urls http://127.0.0.1:2380$i \
    --initial-cluster "$CLUSTER" --initial-cluster-state new --initial-cluster-token bench \
    >"$WORK/etcd$i.log" 2>&1 &
  PIDS+=($!)
done
$BIN dev --nodes 3 --base-port 18001 --cluster benchlocks >"$WORK/concord.log" 2>&1 &
PIDS+=($!)
for i in $(seq 1 100); do
  ok=0
  curl -fs http://127.0.0.1:23791/health >/dev/null 2>&1 && ok=$((ok+1))
  for p in 18001 18002 18003; do curl -fs http://127.0.0.1:$p/health >/dev/null 2>&1 && ok=$((ok+1)); done
  [ $ok -eq 4 ] && break
  sleep 0.2
done
sleep 1
TARGETS="--target http://127.0.0.1:18001 --target http://127.0.0.1:18002 --target http://127.0.0.1:18003"
ETCD="--etcd http://127.0.0.1:23791 --etcd http://127.0.0.1:23792 --etcd http://127.0.0.1:23793"
echo "== $CONC clients, ${DURATION}s each =="
$BIN bench locks $TARGETS $ETCD --concurrency "$CONC" --duration "$DURATION"
# One client: at the Raft leader (no forwarding hop), then at a follower (forwarded over the bus).
LEADER_URL=$(curl -fs http://127.0.0.1:18001/status | python3 -c 'import json,sys; s=json.load(sys.stdin); print(next(m["advertise"] for m in s["members"] if m["id"] == s["leader"]))')
FOLLOWER_URL=$(for p in 18001 18002 18003; do [ "http://127.0.0.1:$p" != "$LEADER_URL" ] && echo "http://127.0.0.1:$p" && break; done)
echo "== 1 client (latency) at the leader $LEADER_URL =="
$BIN bench locks --target "$LEADER_URL" $ETCD --concurrency 1 --duration "$DURATION" --mode uncontended
echo "== 1 client (latency) at a follower $FOLLOWER_URL =="
$BIN bench locks --target "$FOLLOWER_URL" --concurrency 1 --duration "$DURATION" --mode uncontended
