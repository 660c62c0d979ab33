#!/usr/bin/env bash
# Run every benchmark and update docs/benchmarks.md: bench/run_all.sh [--quick] [--only NAME ...]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
exec "$PYTHON" -m bench "$@"
