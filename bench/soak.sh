#!/usr/bin/env bash
# Soak: runs killed at random moments against a failing API, each continued with
# --resume auto until complete; every object checked. Not in CI. See bench/soak.py.
#
#   bench/soak.sh [--runs 20] [--records 4000] [--fault-rate 0.2] [--kill-rate 0.6] [--seed 1]
exec "$(dirname "${BASH_SOURCE[0]}")/run.sh" soak.py "$@"
