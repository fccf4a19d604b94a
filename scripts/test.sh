#!/usr/bin/env bash
# Sets up and runs the whole test suite: unit tests, and integration tests
# against throwaway slapd servers on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo test "$@"
