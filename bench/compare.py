"""landline against the reference v3 peer, side by side in one run.

Started by bench/compare.sh, which builds the release binaries and provides the S3 servers
(LANDLINE_TEST_* variables). One mock API serves both tools the same data; the runs
alternate (landline, peer, peer, landline, ...) so drift on a shared machine hits both.
Each landed object is read back with Python's gzip module and its lines counted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from benchlib import (INCIDENT_RECORDS, LANDLINE, PIPELINE, SHARED_BENCH, gzip6_size, median,
                      object_lines, s3_client, server_env, start_api, timed)


def run_landline(url: str, env: dict, bucket: str, key: str, tmp: Path, sink_extra: str) -> dict:
    pipeline = tmp / "pipeline.toml"
    pipeline.write_text(PIPELINE.format(api=url, bucket=bucket, key=key, sink_extra=sink_extra))
    report = tmp / "report.json"
    t = timed([str(LANDLINE), "run", str(pipeline), "--report-json", str(report), "--quiet"], env)
    t["report"] = json.loads(report.read_text())
    return t


def run_peer(peer: Path, url: str, env: dict, prefix: str) -> dict:
    env = dict(env, API_URL=url, PAGE_SIZE="200", BUCKET=os.environ["LANDLINE_TEST_BUCKET"],
               PREFIX=prefix, PYTHONPATH=str(peer.parent))
    return timed([sys.executable, str(peer)], env)


def peer_key(prefix: str) -> str:
    # peer_common.object_key: PREFIX/date=YYYY-MM-DD/variants.jsonl.gz, UTC date of the run.
    return f"{prefix}/date={time.strftime('%Y-%m-%d', time.gmtime())}/variants.jsonl.gz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0,
                    help="data size as a multiple of the incident workload (83,688 records)")
    ap.add_argument("--runs", type=int, default=3, help="runs of each tool")
    ap.add_argument("--server", choices=["s3s", "moto"], default="s3s")
    ap.add_argument("--peer", type=Path, default=SHARED_BENCH / "peer_v3_stream_tmp.py")
    ap.add_argument("--no-peer", action="store_true", help="landline only (e.g. at --scale 10)")
    ap.add_argument("--no-verify", action="store_true", help="skip reading the objects back")
    ap.add_argument("--sink", default="", help="extra [sink] lines for landline, e.g. 'max_parts_in_flight = 1'")
    a = ap.parse_args()

    records = max(1, round(INCIDENT_RECORDS * a.scale))
    env = dict(os.environ, **server_env(a.server))
    bucket = os.environ["LANDLINE_TEST_BUCKET"]
    s3 = s3_client(env)
    tools = ["landline"] if a.no_peer else ["landline", "peer"]
    rows: dict[str, list[dict]] = {t: [] for t in tools}
    api, url = start_api("rust", records)
    print(f"{records} records from {url}; {a.runs} runs each into {a.server}", file=sys.stderr)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(a.runs):
                order = tools if i % 2 == 0 else tools[::-1]
                for tool in order:
                    prefix = f"bench-compare/{os.getpid()}/{tool}-{i}"
                    print(f"run {i + 1}/{a.runs}: {tool} ...", file=sys.stderr, flush=True)
                    if tool == "landline":
                        key = f"{prefix}/variants.jsonl.gz"
                        r = run_landline(url, env, bucket, key, Path(tmp), a.sink)
                    else:
                        r = run_peer(a.peer, url, env, prefix)
                        key = peer_key(prefix)
                    r["key"] = key
                    if a.no_verify:
                        r["size"] = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
                        r["lines"] = None
                    else:
                        r["size"], r["lines"] = object_lines(s3, bucket, key)
                    rows[tool].append(r)
            gzip6 = None
            if not a.no_verify and a.scale <= 1:
                gzip6 = gzip6_size(s3, bucket, rows["landline"][0]["key"])
    finally:
        api.terminate()
        api.wait()
        for runs in rows.values():
            for r in runs:
                s3.delete_object(Bucket=bucket, Key=r["key"])

    print(f"\n{platform.node()}: {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}; "
          f"{records} records, {a.runs} runs each, alternating, S3 server {a.server}")
    print(f"{'tool':<9} {'run':>3} {'wall s':>8} {'CPU s':>8} {'peak RSS MiB':>12} {'bytes written':>14} {'records':>9}")
    for tool, runs in rows.items():
        for i, r in enumerate(runs):
            lines = "-" if r["lines"] is None else r["lines"]
            print(f"{tool:<9} {i + 1:>3} {r['wall']:>8.2f} {r['cpu']:>8.2f} {r['rss_mib']:>12.1f} "
                  f"{r['size']:>14} {lines:>9}")
    print("medians:")
    for tool, runs in rows.items():
        print(f"{tool:<9}     {median([r['wall'] for r in runs]):>8.2f} {median([r['cpu'] for r in runs]):>8.2f} "
              f"{median([r['rss_mib'] for r in runs]):>12.1f} {int(median([r['size'] for r in runs])):>14}")
    if "peer" in rows:
        print("landline / peer (median of the per-run ratios):")
        for field, label in [("wall", "wall"), ("cpu", "CPU"), ("rss_mib", "peak RSS"), ("size", "bytes written")]:
            ratios = [l[field] / p[field] for l, p in zip(rows["landline"], rows["peer"])]
            print(f"  {label:<14} {median(ratios):.3f}")
    if gzip6:
        size = rows["landline"][0]["size"]
        print(f"landline gzip / gzip -6 of the same JSON Lines: {size} / {gzip6} = {size / gzip6:.4f}")
    mismatched = [(t, i) for t, runs in rows.items() for i, r in enumerate(runs)
                  if r["lines"] is not None and r["lines"] != records]
    if mismatched:
        sys.exit(f"line counts differ from {records} records: {mismatched}")


if __name__ == "__main__":
    main()
