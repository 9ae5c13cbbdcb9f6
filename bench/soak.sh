#!/usr/bin/env bash
# Soak: runs killed at random moments against a failing API and, through the fault proxy
# bench/store_faults.py, a failing store (503 SlowDown, 500 InternalError, answers lost or
# cut), each continued with --resume auto until complete, whether killed or failed; every
# object, the open uploads and the checkpoints checked against moto directly. Not in CI.
# See bench/soak.py.
#
#   bench/soak.sh [--runs 20] [--records 4000] [--fault-rate 0.2] [--store-fault-rate 0.05]
#                 [--store-attempts 3] [--kill-rate 0.6] [--attempts 30] [--seed 1] [--trace FILE]
exec "$(dirname "${BASH_SOURCE[0]}")/run.sh" soak.py "$@"
