#!/usr/bin/env bash
# Flat memory: landline's peak RSS at two (or more) data sizes, against the same S3 server.
#
#   bench/memory.sh [--api rust|python] [--server s3s|moto] [RECORDS ...]
#   bench/memory.sh --single [--total N] [--server s3s|moto]
#
# Default: the project's mock API at 8,369 and 83,688 records of ~28.6 KB (0.24 GB and
# 2.39 GB of JSON Lines) into s3s-fs. `--api python` serves the data with the reference
# mock (../shared/bench/mock_api.py) instead. Each run is measured with /usr/bin/time -v,
# and the landed object is downloaded and its lines counted. Prints a table and the ratio
# of the largest run's peak RSS to the smallest's.
#
# --single: every record in ONE response (/single/variants of the project's mock, no
# pagination; --total 20000 is ~570 MB of JSON), once uncompressed and once with the mock's
# --gzip. Prints peak RSS (target <= 40 MiB), wall, the body as received and decoded, and
# the line count of each object.
exec "$(dirname "${BASH_SOURCE[0]}")/run.sh" memory.py "$@"
