"""Runs landline against the mock API at several sizes and prints peak RSS side by side.

Started by bench/memory.sh, which provides the S3 servers (LANDLINE_TEST_* variables) and
the dist binaries (`--profile dist`). Standard library plus boto3 (from the test servers'
virtualenv).

--single measures one huge response instead: every record of --total (default 20,000,
~570 MB of JSON) in ONE response from the project's mock API (/single/variants, no
pagination), once sent uncompressed and once gzipped (the mock's --gzip, level 1; landline
asks for compression either way). Both runs print peak RSS (/usr/bin/time -v, target
<= 40 MiB), wall and CPU seconds, the body as received and decoded (landline's report), and
the lines counted in the landed object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from benchlib import LANDLINE, PIPELINE, SINGLE_PIPELINE, object_lines, s3_client, server_env, start_api, timed

# --single: the peak RSS aimed at, MiB.
SINGLE_TARGET_MIB = 40


def run_once(api_kind: str, server: str, records: int, tmp: Path, template: str = PIPELINE,
             api_args: tuple[str, ...] = (), label: str = "") -> dict:
    env = dict(os.environ, **server_env(server))
    bucket = os.environ["LANDLINE_TEST_BUCKET"]
    key = f"bench-memory/{api_kind}{label}-{records}-{os.getpid()}/variants.jsonl.gz"
    api, url = start_api(api_kind, records, api_args)
    try:
        pipeline = tmp / f"p{label}-{records}.toml"
        pipeline.write_text(template.format(api=url, bucket=bucket, key=key, sink_extra=""))
        report_path = tmp / f"r{label}-{records}.json"
        t = timed([str(LANDLINE), "run", str(pipeline), "--report-json", str(report_path), "--quiet"], env)
    finally:
        api.terminate()
        api.wait()
    report = json.loads(report_path.read_text())
    s3 = s3_client(env)
    try:
        _, lines = object_lines(s3, bucket, key)
    finally:
        s3.delete_object(Bucket=bucket, Key=key)
    return {
        "records": records, "lines": lines, "rss_mib": t["rss_mib"], "wall": t["wall"], "cpu": t["cpu"],
        "anon_mib": t["anon_mib"], "file_mib": t["file_mib"],
        "json_gb": report["bytes_uncompressed"] / 1e9, "gz_mib": report["bytes_written"] / 2**20,
        "parts": report["parts"], "pages": report["pages"],
        "body_mb": report["bytes_in"] / 1e6, "wire_mb": report["network"]["bytes_wire"] / 1e6,
    }


def main_single(a) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, api_args in [("identity", ()), ("gzip", ("--gzip",))]:
            print(f"running one response of {a.total} records, {name} (rust mock API -> {a.server}) ...",
                  file=sys.stderr, flush=True)
            r = run_once("rust", a.server, a.total, Path(tmp), SINGLE_PIPELINE, api_args, f"-single-{name}")
            r["encoding"] = name
            rows.append(r)
    print(f"\nlandline {LANDLINE}, one response: the project's mock API /single/variants "
          f"(no pagination), S3 server: {a.server}")
    print(f"{'response':<9} {'records':>8} {'lines in object':>15} {'pages':>5} {'wire MB':>8} {'body MB':>8} "
          f"{'gzip MiB':>9} {'parts':>5} {'wall s':>7} {'CPU s':>6} {'peak RSS MiB':>12} {'of it: data':>11} "
          f"{'code':>5}")
    for r in rows:
        ok = "" if r["lines"] == r["records"] else "  <-- MISMATCH"
        print(f"{r['encoding']:<9} {r['records']:>8} {r['lines']:>15} {r['pages']:>5} {r['wire_mb']:>8.1f} "
              f"{r['body_mb']:>8.1f} {r['gz_mib']:>9.1f} {r['parts']:>5} {r['wall']:>7.2f} {r['cpu']:>6.2f} "
              f"{r['rss_mib']:>12.1f} {r['anon_mib']:>11.1f} {r['file_mib']:>5.1f}{ok}")
    worst = max(r["rss_mib"] for r in rows)
    verdict = "met" if worst <= SINGLE_TARGET_MIB else "NOT met"
    print(f"largest peak RSS {worst:.1f} MiB (target <= {SINGLE_TARGET_MIB} MiB: {verdict})")
    if any(r["lines"] != r["records"] for r in rows):
        sys.exit(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--api", choices=["rust", "python"], default="rust")
    ap.add_argument("--server", choices=["s3s", "moto"], default="s3s")
    ap.add_argument("records", type=int, nargs="*", default=[8_369, 83_688])
    ap.add_argument("--single", action="store_true",
                    help="all records in one response (/single/variants), uncompressed and gzipped")
    ap.add_argument("--total", type=int, default=20_000,
                    help="--single: records in the response (default 20,000, ~570 MB of JSON)")
    a = ap.parse_args()
    if a.single:
        if a.api != "rust" or a.records != ap.get_default("records"):
            ap.error("--single uses the project's mock API and --total, not --api or RECORDS")
        main_single(a)
        return
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
