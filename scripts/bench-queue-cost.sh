#!/usr/bin/env bash
# CPU cost of one queue message end to end (produce + consume + ack, batch 100): of the Concord
# node that serves it and of Redis, read from /proc while `concord bench queue` drives node n1 of
# a fresh 3-node `concord dev` cluster. CPU time per message moves far less with the noise of a
# shared machine than throughput does, and given several builds the script runs them in
# alternating rounds, so each sees the same noise: the way to A/B a change here.
#
# Usage: scripts/bench-queue-cost.sh [duration_s] [rounds] [binary[:lua_dir] ...]
#   (no binary: builds and measures .build/release/concord with ./lua)
# Example, this tree against an older build:
#   git worktree add /tmp/old <rev> && (cd /tmp/old && swift build -c release)
#   scripts/bench-queue-cost.sh 5 3 /tmp/old/.build/release/concord:/tmp/old/lua .build/release/concord
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
DURATION=${1:-5}
ROUNDS=${2:-3}
BUILDS=("${@:3}")
if [ ${#BUILDS[@]} -eq 0 ]; then
  swift build -c release --product concord >/dev/null
  BUILDS=(.build/release/concord)
fi
WORK=$(mktemp -d)
DEV=""
cleanup() { [ -n "$DEV" ] && kill "$DEV" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM
HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
declare -A NODE_SUM REDIS_SUM

for round in $(seq 1 "$ROUNDS"); do
  for build in "${BUILDS[@]}"; do
    bin=${build%%:*}
    lua=$PWD/lua
    [ "$build" != "$bin" ] && lua=${build#*:}
    CONCORD_LUA_DIR=$lua "$bin" dev --nodes 3 --base-port 18301 --cluster benchcost >"$WORK/dev.log" 2>&1 &
    DEV=$!
    for _ in $(seq 1 100); do
      up=0
      for p in 18301 18302 18303; do curl -fs "http://127.0.0.1:$p/health" >/dev/null 2>&1 && up=$((up + 1)); done
      [ $up -eq 3 ] && break
      sleep 0.2
    done
    [ $up -eq 3 ] || { cat "$WORK/dev.log" >&2; echo "cluster did not come up" >&2; exit 1; }
    port=$(grep -o 'redis://127.0.0.1:[0-9]*' "$WORK/dev.log" | head -1 | sed 's/.*://')
    node=$(pgrep -f "node --id n1 --listen 127.0.0.1:18301" | head -1)
    redis=$(pgrep -f "redis-server.*:$port" | head -1)
    n0=$(ticks "$node"); r0=$(ticks "$redis")
    "$bin" bench queue --target http://127.0.0.1:18301 --batch 100 --duration "$DURATION" --json >"$WORK/out.json"
    n1=$(ticks "$node"); r1=$(ticks "$redis")
    read -r msgs node_us redis_us < <(python3 -c '
import json, sys
msgs = json.load(open(sys.argv[1]))["results"][0]["ops"]
hz, dn, dr = float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
print(msgs, "%.2f" % (dn / hz * 1e6 / msgs), "%.2f" % (dr / hz * 1e6 / msgs))' "$WORK/out.json" "$HZ" $((n1 - n0)) $((r1 - r0)))
    echo "round $round  $bin  messages $msgs  node $node_us us/msg  redis $redis_us us/msg"
    NODE_SUM[$bin]=$(python3 -c "print(${NODE_SUM[$bin]:-0} + $node_us)")
    REDIS_SUM[$bin]=$(python3 -c "print(${REDIS_SUM[$bin]:-0} + $redis_us)")
    kill "$DEV"; wait "$DEV" 2>/dev/null || true; DEV=""
  done
done
for build in "${BUILDS[@]}"; do
  bin=${build%%:*}
  python3 -c "print('mean over $ROUNDS rounds  $bin  node %.2f us/msg  redis %.2f us/msg' % (${NODE_SUM[$bin]} / $ROUNDS, ${REDIS_SUM[$bin]} / $ROUNDS))"
done
