#!/usr/bin/env bash
# Runs a benchmark script (bench/SCRIPT.py) with the dist binaries built (`--profile dist`,
# the optimised build that is published; target/dist/) and the S3 test servers started by
# scripts/test.sh (which exports their LANDLINE_TEST_* variables).
#
#   bench/run.sh SCRIPT.py [ARGS...]      (bench/compare.sh and bench/memory.sh call this)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
if [[ -z ${LANDLINE_TEST_S3S_ENDPOINT:-} ]]; then
    cargo build --profile dist -q -p landline-cli -p landline-mockapi
    exec scripts/test.sh --servers-only -- "$0" "$@"
fi
[[ -x /usr/bin/time ]] || { echo "the benchmarks need GNU time (apt-get install time)" >&2; exit 1; }
script=$1
shift
exec "$LANDLINE_TEST_PYTHON" "bench/$script" "$@"
