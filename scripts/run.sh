#!/usr/bin/env bash
# One command for a newcomer: install what is missing, build, start a local 3-node cluster
# with its own redis-server (`concord dev`). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
swift build -c release --product concord
exec .build/release/concord dev "$@"
