#!/usr/bin/env python3
"""The cost of checkpoints: landline on the incident workload with checkpoints on (the
default: one after every part that ends a page) and off (`[state] checkpoints = false`),
alternating runs against the same mock API and S3 server. Prints wall, CPU, peak RSS, parts
and object size of each run, the medians, and the on/off ratios (target: wall <= 1.02).

    bench/checkpoints.sh [--runs N] [--scale S] [--server s3s|moto]
"""
import argparse
import os
import sys
import tempfile
from pathlib import Path

from benchlib import INCIDENT_RECORDS, PIPELINE, median, s3_client, server_env, start_api
from compare import land


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="runs of each setting (default 5)")
    ap.add_argument("--scale", type=float, default=1.0, help="data as a multiple of the incident workload")
    ap.add_argument("--server", choices=["s3s", "moto"], default="s3s")
    a = ap.parse_args()
    records = max(1, round(INCIDENT_RECORDS * a.scale))
    env = dict(os.environ, **server_env(a.server))
    bucket = os.environ["LANDLINE_TEST_BUCKET"]
    s3 = s3_client(env)
    api, url = start_api("rust", records)
    settings = {"on": "", "off": "[state]\ncheckpoints = false"}
    rows: dict[str, list[dict]] = {name: [] for name in settings}
    print(f"{records} records from {url}; {a.runs} runs of each setting into {a.server}", file=sys.stderr)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(a.runs):
                order = list(settings) if i % 2 == 0 else list(settings)[::-1]
                for name in order:
                    key = f"bench-checkpoints/{os.getpid()}/{name}-{i}/variants.jsonl.gz"
                    text = PIPELINE.format(api=url, bucket=bucket, key=key, sink_extra=settings[name])
                    print(f"run {i + 1}/{a.runs}: checkpoints {name} ...", file=sys.stderr, flush=True)
                    r = land(text, env, Path(tmp))
                    r["key"] = key
                    rows[name].append(r)
                    s3.delete_object(Bucket=bucket, Key=key)
    finally:
        api.terminate()
        api.wait()
    print(f"\ncheckpoints on and off, {records} records, {a.runs} alternating runs each, S3 server {a.server}")
    print(f"{'checkpoints':<12} {'run':>3} {'wall s':>8} {'CPU s':>8} {'peak RSS MiB':>13} {'parts':>6} {'bytes written':>14}")
    for name, runs in rows.items():
        for i, r in enumerate(runs):
            rep = r["report"]
            print(f"{name:<12} {i + 1:>3} {r['wall']:>8.2f} {r['cpu']:>8.2f} {r['rss_mib']:>13.1f} "
                  f"{rep['parts']:>6} {rep['bytes_written']:>14}")
    print("medians:")
    for name, runs in rows.items():
        print(f"{name:<12}     {median([r['wall'] for r in runs]):>8.2f} {median([r['cpu'] for r in runs]):>8.2f} "
              f"{median([r['rss_mib'] for r in runs]):>13.1f}")
    print("on / off (median of the per-run ratios):")
    for field, label in [("wall", "wall"), ("cpu", "CPU"), ("rss_mib", "peak RSS")]:
        ratios = [on[field] / off[field] for on, off in zip(rows["on"], rows["off"])]
        print(f"  {label:<9} {median(ratios):.3f}")
    sizes = [on["report"]["bytes_written"] / off["report"]["bytes_written"] for on, off in zip(rows["on"], rows["off"])]
    print(f"  size      {median(sizes):.4f} (parts end at page ends, so the last block of each page is short)")


if __name__ == "__main__":
    main()
