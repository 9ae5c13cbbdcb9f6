"""Runs landline against the mock API at several sizes and prints peak RSS side by side.

Started by bench/memory.sh, which provides the S3 servers (LANDLINE_TEST_* variables) and
the release binaries. Standard library plus boto3 (from the test servers' virtualenv).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from benchlib import LANDLINE, PIPELINE, object_lines, s3_client, server_env, start_api, timed


def run_once(api_kind: str, server: str, records: int, tmp: Path) -> dict:
    env = dict(os.environ, **server_env(server))
    bucket = os.environ["LANDLINE_TEST_BUCKET"]
    key = f"bench-memory/{api_kind}-{records}-{os.getpid()}/variants.jsonl.gz"
    api, url = start_api(api_kind, records)
    try:
        pipeline = tmp / f"p-{records}.toml"
        pipeline.write_text(PIPELINE.format(api=url, bucket=bucket, key=key, sink_extra=""))
        report_path = tmp / f"r-{records}.json"
        t = timed([str(LANDLINE), "run", str(pipeline), "--report-json", str(report_path), "--quiet"], env)
    finally:
        api.terminate()
        api.wait()
    report = json.loads(report_path.read_text())
    s3 = s3_client(env)
    _, lines = object_lines(s3, bucket, key)
    s3.delete_object(Bucket=bucket, Key=key)
    return {
        "records": records, "lines": lines, "rss_mib": t["rss_mib"], "wall": t["wall"], "cpu": t["cpu"],
        "anon_mib": t["anon_mib"], "file_mib": t["file_mib"],
        "json_gb": report["bytes_uncompressed"] / 1e9, "gz_mib": report["bytes_written"] / 2**20,
        "parts": report["parts"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--api", choices=["rust", "python"], default="rust")
    ap.add_argument("--server", choices=["s3s", "moto"], default="s3s")
    ap.add_argument("records", type=int, nargs="*", default=[8_369, 83_688])
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in a.records:
            print(f"running {n} records ({a.api} mock API -> {a.server}) ...", file=sys.stderr, flush=True)
            rows.append(run_once(a.api, a.server, n, Path(tmp)))
    # "data" and "code" are the peaks of anonymous and file-backed resident memory, sampled
    # every 20 ms from /proc/PID/smaps_rollup (they need not peak at the same moment).
    print(f"\nlandline {LANDLINE}, mock API: {a.api}, S3 server: {a.server}")
    print(f"{'records':>9} {'lines in object':>15} {'JSON GB':>8} {'gzip MiB':>9} {'parts':>5} "
          f"{'wall s':>7} {'CPU s':>6} {'peak RSS MiB':>12} {'of it: data':>11} {'code':>5}")
    for r in rows:
        ok = "" if r["lines"] == r["records"] else "  <-- MISMATCH"
        print(f"{r['records']:>9} {r['lines']:>15} {r['json_gb']:>8.2f} {r['gz_mib']:>9.1f} {r['parts']:>5} "
              f"{r['wall']:>7.2f} {r['cpu']:>6.2f} {r['rss_mib']:>12.1f} {r['anon_mib']:>11.1f} "
              f"{r['file_mib']:>5.1f}{ok}")
    if len(rows) > 1:
        ratio = rows[-1]["rss_mib"] / rows[0]["rss_mib"]
        print(f"peak RSS ratio, {rows[-1]['records']} / {rows[0]['records']} records: {ratio:.3f}")
    if any(r["lines"] != r["records"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
