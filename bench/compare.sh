#!/usr/bin/env bash
# landline against the reference v3 peer (../shared/bench/peer_v3_stream_tmp.py), side by
# side: the same mock API, the same S3 server, alternating runs.
#
#   bench/compare.sh                       # the incident workload, 3 runs each, into s3s-fs
#   bench/compare.sh --scale 0.1           # a quick run
#   bench/compare.sh --scale 10 --no-peer  # flat memory at 836,880 records (~24 GB streamed)
#   bench/compare.sh --sink 'max_parts_in_flight = 1'   # other landline settings
#
# Prints wall and CPU seconds, peak RSS (/usr/bin/time -v), bytes written and the records
# counted in each landed object, the medians, and the landline/peer ratios.
exec "$(dirname "${BASH_SOURCE[0]}")/run.sh" compare.py "$@"
