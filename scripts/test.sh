#!/usr/bin/env bash
# Runs every test: pure cores (Raft simulation, lock table, MESI, ring, detector), the Lua
# scripts against a real redis-server, and integration tests that start their own
# redis-server on free loopback ports and real `concord node` processes.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
swift build --build-tests
swift test --skip-build "$@"
