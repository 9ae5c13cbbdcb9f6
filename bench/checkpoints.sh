#!/usr/bin/env bash
# The cost of checkpoints on the incident workload: checkpoints on (the default) against
# [state] checkpoints = false, alternating runs, medians and on/off ratios.
#
#   bench/checkpoints.sh [--runs N] [--scale S] [--server s3s|moto]
exec "$(dirname "${BASH_SOURCE[0]}")/run.sh" checkpoints.py "$@"
