#!/usr/bin/env bash
# The Lambda function under cargo-lambda's local emulator, against the mock API and moto
# (started by scripts/test.sh): see scripts/lambda-local.py.
#
#   scripts/lambda-local.sh [--records N] [--timeout SECONDS]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
if [[ -z ${LANDLINE_TEST_MOTO_ENDPOINT:-} ]]; then
    exec scripts/test.sh --servers-only -- "$0" "$@"
fi
exec "$LANDLINE_TEST_PYTHON" scripts/lambda-local.py "$@"
