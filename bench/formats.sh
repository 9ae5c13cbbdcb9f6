#!/usr/bin/env bash
# landline's object formats side by side: gzip (.jsonl.gz, level 6) and zstd (.jsonl.zst,
# level 3) on the incident workload, the same mock API, the same S3 server, alternating runs.
#
#   bench/formats.sh                                   # 83,688 records, 3 runs of each, into s3s-fs
#   bench/formats.sh --scale 0.1 --runs 1              # a quick run
#   bench/formats.sh --formats gzip,zstd,none          # uncompressed JSON Lines (.jsonl) too
#   bench/formats.sh --zstd-level 6                    # another level ([sink] compression_level)
#   bench/formats.sh --sink 'compression_threads = 1'  # other [sink] settings, for every format
#
# Prints wall and CPU seconds, peak RSS (/usr/bin/time -v), bytes written, the report's
# compression ratio and the records counted in each landed object (read back: gzip with
# Python's gzip module, zstd with the zstandard module or zstd -dc, every frame), the
# medians, the zstd/gzip ratios, each object's size against gzip -6 of the same JSON Lines,
# and the targets: zstd wall <= 0.5 x gzip wall, zstd size <= gzip -6 size.
exec "$(dirname "${BASH_SOURCE[0]}")/run.sh" formats.py "$@"
