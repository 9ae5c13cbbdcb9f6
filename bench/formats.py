"""landline's object formats side by side in one run: gzip (`.jsonl.gz`, level 6) and zstd
(`.jsonl.zst`, level 3: one independent frame per 1 MiB block, on every core) by default,
uncompressed JSON Lines (`.jsonl`) on request (--formats gzip,zstd,none).

Started by bench/formats.sh, which builds the dist binaries (`--profile dist`) and provides
the S3 servers (LANDLINE_TEST_* variables). One mock API (the project's, landline-mockapi)
serves every run the same data; the format follows the destination key's extension, and the
runs alternate (gzip, zstd, zstd, gzip, ...) so drift on a shared machine hits each format
alike. Each landed object is read back and its lines counted: gzip with Python's gzip
module, zstd through the `zstandard` module's stream reader if it is importable, else
`zstd -dc` (both read every frame), uncompressed as stored; the decoded bytes are checked
against the report's bytes_uncompressed. Once, the first object's JSON Lines go through
`gzip -6` for the size to compare against.

Prints, per run, wall and CPU seconds and peak RSS (/usr/bin/time -v), bytes written, the
report's compression ratio (bytes_uncompressed / bytes_written) and the records counted; the
medians; each format against gzip (median of the per-run ratios); each compressed size
against `gzip -6`; and whether the targets hold: zstd wall <= 0.5 x gzip wall (at least 2x
faster end to end) and zstd's object no larger than `gzip -6` of the same JSON Lines.

Each object is deleted once it has been read back (the first one, which `gzip -6` reads,
at the end), so uncompressed runs at a large --scale need no more disk than one object.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from benchlib import (INCIDENT_RECORDS, PIPELINE, gzip6_size, median, object_records, s3_client,
                      server_env, start_api)
from compare import land

# The destination key's extension, which names the format; the level landline uses unset.
EXTENSION = {"gzip": ".jsonl.gz", "zstd": ".jsonl.zst", "none": ".jsonl"}
DEFAULT_LEVEL = {"gzip": 6, "zstd": 3}
# zstd's wall against gzip's (median of the per-run ratios): at least 2x faster end to end.
WALL_TARGET = 0.5


def formats_arg(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in EXTENSION]
    if not names or unknown or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"a comma-separated list of distinct formats among {', '.join(EXTENSION)}: {text!r}")
    return names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0,
                    help="data size as a multiple of the incident workload (83,688 records)")
    ap.add_argument("--runs", type=int, default=3, help="runs of each format (default 3)")
    ap.add_argument("--server", choices=["s3s", "moto"], default="s3s")
    ap.add_argument("--formats", type=formats_arg, default=["gzip", "zstd"],
                    help="the formats, in the order of the first run: gzip, zstd, none (default gzip,zstd)")
    ap.add_argument("--gzip-level", type=int, help="[sink] compression_level of the gzip runs (default 6)")
    ap.add_argument("--zstd-level", type=int, help="[sink] compression_level of the zstd runs (default 3)")
    ap.add_argument("--no-verify", action="store_true",
                    help="skip reading the objects back (and gzip -6)")
    ap.add_argument("--sink", default="",
                    help="extra [sink] lines for every run, e.g. 'compression_threads = 1' (levels: "
                         "--gzip-level and --zstd-level)")
    a = ap.parse_args()
    if a.runs < 1:
        ap.error("--runs must be at least 1")

    records = max(1, round(INCIDENT_RECORDS * a.scale))
    env = dict(os.environ, **server_env(a.server))
    bucket = os.environ["LANDLINE_TEST_BUCKET"]
    s3 = s3_client(env)
    formats = a.formats
    levels = {"gzip": a.gzip_level, "zstd": a.zstd_level, "none": None}

    def sink_extra(fmt: str) -> str:
        lines = [a.sink] if a.sink else []
        if levels[fmt] is not None:
            lines.append(f"compression_level = {levels[fmt]}")
        return "\n".join(lines)

    def level(fmt: str) -> str:
        return "-" if fmt == "none" else str(levels[fmt] if levels[fmt] is not None else DEFAULT_LEVEL[fmt])

    rows: dict[str, list[dict]] = {f: [] for f in formats}
    remaining: list[str] = []  # keys landed and not yet deleted
    problems: list[str] = []
    gzip6 = gzip6_from = None
    keep = not a.no_verify and a.scale <= 1  # the first object, for gzip -6 at the end
    api, url = start_api("rust", records)
    print(f"{records} records from {url}; {a.runs} runs of each of {', '.join(formats)} into {a.server}",
          file=sys.stderr)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(a.runs):
                for fmt in formats if i % 2 == 0 else formats[::-1]:
                    key = f"bench-formats/{os.getpid()}/{fmt}-{i}/variants{EXTENSION[fmt]}"
                    print(f"run {i + 1}/{a.runs}: {fmt} ...", file=sys.stderr, flush=True)
                    r = land(PIPELINE.format(api=url, bucket=bucket, key=key, sink_extra=sink_extra(fmt)),
                             env, Path(tmp))
                    remaining.append(key)
                    r["key"] = key
                    rows[fmt].append(r)
                    rep = r["report"]
                    if rep["compression"] != fmt:
                        sys.exit(f"{key}: landline wrote {rep['compression']!r}, not {fmt!r}")
                    if a.no_verify:
                        r["size"] = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
                        r["lines"] = r["decoded"] = None
                    else:
                        r["size"], r["lines"], r["decoded"] = object_records(s3, bucket, key, fmt)
                    if r["size"] != rep["bytes_written"]:
                        problems.append(f"{fmt} run {i + 1}: {r['size']} bytes stored, "
                                        f"{rep['bytes_written']} reported written")
                    if r["decoded"] is not None and r["decoded"] != rep["bytes_uncompressed"]:
                        problems.append(f"{fmt} run {i + 1}: {r['decoded']} bytes decoded, "
                                        f"{rep['bytes_uncompressed']} reported (bytes_uncompressed)")
                    if r["lines"] is not None and r["lines"] != records:
                        problems.append(f"{fmt} run {i + 1}: {r['lines']} lines, {records} records served")
                    if keep and gzip6_from is None:
                        gzip6_from = (fmt, key)
                    else:
                        s3.delete_object(Bucket=bucket, Key=key)
                        remaining.remove(key)
            if gzip6_from:
                print(f"gzip -6 of the JSON Lines of the first object ({gzip6_from[0]}) ...",
                      file=sys.stderr, flush=True)
                gzip6 = gzip6_size(s3, bucket, gzip6_from[1], gzip6_from[0])
    finally:
        api.terminate()
        api.wait()
        for key in remaining:
            s3.delete_object(Bucket=bucket, Key=key)

    def ratio(r: dict) -> float:
        rep = r["report"]
        return rep["bytes_uncompressed"] / rep["bytes_written"] if rep["bytes_written"] else float("nan")

    print(f"\n{platform.node()}: {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}; {records} records, "
          f"{a.runs} runs of each format, alternating, S3 server {a.server}"
          + (f"; [sink] {a.sink!r}" if a.sink else ""))
    print(f"{'format':<7} {'level':>5} {'run':>3} {'wall s':>8} {'CPU s':>8} {'peak RSS MiB':>12} "
          f"{'bytes written':>14} {'ratio':>7} {'records':>9}")
    for fmt, runs in rows.items():
        for i, r in enumerate(runs):
            lines = "-" if r["lines"] is None else r["lines"]
            print(f"{fmt:<7} {level(fmt):>5} {i + 1:>3} {r['wall']:>8.2f} {r['cpu']:>8.2f} {r['rss_mib']:>12.1f} "
                  f"{r['size']:>14} {ratio(r):>7.2f} {lines:>9}")
    print("medians:")
    for fmt, runs in rows.items():
        print(f"{fmt:<7} {level(fmt):>5}     {median([r['wall'] for r in runs]):>8.2f} "
              f"{median([r['cpu'] for r in runs]):>8.2f} {median([r['rss_mib'] for r in runs]):>12.1f} "
              f"{int(median([r['size'] for r in runs])):>14} {median([ratio(r) for r in runs]):>7.2f}")

    base = "gzip" if "gzip" in rows else formats[0]
    for fmt in formats:
        if fmt == base:
            continue
        print(f"{fmt} / {base} (median of the per-run ratios):")
        for field, label in [("wall", "wall"), ("cpu", "CPU"), ("rss_mib", "peak RSS"), ("size", "bytes written")]:
            ratios = [x[field] / y[field] for x, y in zip(rows[fmt], rows[base])]
            print(f"  {label:<14} {median(ratios):.3f}")
    if gzip6:
        print(f"against gzip -6 of the same JSON Lines ({gzip6} bytes, from the {gzip6_from[0]} object of run 1):")
        for fmt in formats:
            if fmt != "none":
                size = median([r["size"] for r in rows[fmt]])
                print(f"  {fmt:<5} {int(size)} / {gzip6} = {size / gzip6:.4f} (median size)")

    if "gzip" in rows and "zstd" in rows:
        at = "" if levels["gzip"] is None and levels["zstd"] is None else \
            f" (gzip level {level('gzip')}, zstd level {level('zstd')}; the targets are for the defaults)"
        print(f"targets{at}:")
        wall = median([z["wall"] / g["wall"] for z, g in zip(rows["zstd"], rows["gzip"])])
        print(f"  zstd wall <= {WALL_TARGET} x gzip wall (>= {1 / WALL_TARGET:g}x faster end to end): "
              f"{wall:.3f} ({1 / wall:.2f}x faster): {'met' if wall <= WALL_TARGET else 'NOT met'}")
        if gzip6:
            size = median([r["size"] for r in rows["zstd"]]) / gzip6
            print(f"  zstd size <= gzip -6 size: {size:.4f} x gzip -6: {'met' if size <= 1 else 'NOT met'}")
        else:
            print("  zstd size <= gzip -6 size: not measured (gzip -6 is skipped with --no-verify and above --scale 1)")
    if problems:
        sys.exit("the objects do not match:\n  " + "\n  ".join(problems))


if __name__ == "__main__":
    main()
