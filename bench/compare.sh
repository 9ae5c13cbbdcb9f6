#!/usr/bin/env bash
# landline against the reference v3 peer (../shared/bench/peer_v3_stream_tmp.py), side by
# side: the same mock API, the same S3 server, alternating runs.
#
#   bench/compare.sh                       # the incident workload, 3 runs each, into s3s-fs
#   bench/compare.sh --scale 0.1           # a quick run
#   bench/compare.sh --scale 10 --no-peer  # flat memory at 836,880 records (~24 GB streamed)
#   bench/compare.sh --sink 'max_parts_in_flight = 1'   # other landline settings
#   bench/compare.sh --network             # an imitated network: 100 ms a page, 100 Mbit/s, gzip
#   bench/compare.sh --network --scale 0.1 --runs 1 --network-part offset   # a quick look
#
# Prints wall and CPU seconds, peak RSS (/usr/bin/time -v), bytes written and the records
# counted in each landed object, the medians, and the landline/peer ratios.
#
# --network [--latency-ms L] [--bandwidth-mbps B] [--network-part token|offset|both] prints,
# per part, the same figures plus landline's pages and bytes on the wire, the network floor
# (pages x latency + wire bytes / bandwidth) and wall / floor: "token" is landline against
# the v3 peer from the reference mock (../shared/bench/mock_api.py --latency-ms L
# --bandwidth-mbps B --gzip); "offset" is landline's offset pagination at [source]
# concurrency = 4 against 1 from the project's mock (landline-mockapi, same flags), with the
# c4/c1 wall ratio (target <= 0.35) and the 4-way floor (sequential floor / 4).
exec "$(dirname "${BASH_SOURCE[0]}")/run.sh" compare.py "$@"
