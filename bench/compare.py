"""landline against the reference v3 peer, side by side in one run.

Started by bench/compare.sh, which builds the dist binaries (`--profile dist`) and provides
the S3 servers (LANDLINE_TEST_* variables). One mock API serves both tools the same data; the runs
alternate (landline, peer, peer, landline, ...) so drift on a shared machine hits both.
Each landed object is read back with Python's gzip module and its lines counted.

--network measures the fetching side on an imitated network instead (gzip on, --latency-ms
before each page, --bandwidth-mbps for each response), in two parts (--network-part):

  token   landline against the v3 peer, alternating, both from the reference mock
          (../shared/bench/mock_api.py --latency-ms L --bandwidth-mbps B --gzip), one page
          after the other as token pagination must;
  offset  landline with offset pagination at [source] concurrency = 4 against concurrency = 1,
          alternating, from the project's mock (landline-mockapi, same flags).

Both print the network floor, the time the imitated network alone needs to deliver the
data: pages x latency + bytes on the wire / bandwidth, with the pages and the wire bytes
(network.bytes_wire: page bodies as received, gzipped) from landline's --report-json, and
each run's wall / floor. The floor is the sequential one, one page at a time; with
concurrency 4 also the 4-way floor, that sum / 4 (four pages at once, each response at the
full bandwidth, as both mocks limit each response on its own).
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

from benchlib import (INCIDENT_RECORDS, LANDLINE, OFFSET_PIPELINE, PIPELINE, SHARED_BENCH, gzip6_size,
                      median, object_lines, s3_client, server_env, start_api, timed)

# --network: the c4 / c1 wall ratio aimed at for offset pagination.
OFFSET_TARGET = 0.35


def land(pipeline_text: str, env: dict, tmp: Path) -> dict:
    """Runs landline on a pipeline; timed()'s figures plus its --report-json as "report"."""
    pipeline = tmp / "pipeline.toml"
    pipeline.write_text(pipeline_text)
    report = tmp / "report.json"
    t = timed([str(LANDLINE), "run", str(pipeline), "--report-json", str(report), "--quiet"], env)
    t["report"] = json.loads(report.read_text())
    return t


def run_landline(url: str, env: dict, bucket: str, key: str, tmp: Path, sink_extra: str) -> dict:
    return land(PIPELINE.format(api=url, bucket=bucket, key=key, sink_extra=sink_extra), env, tmp)


def run_peer(peer: Path, url: str, env: dict, prefix: str) -> dict:
    env = dict(env, API_URL=url, PAGE_SIZE="200", BUCKET=os.environ["LANDLINE_TEST_BUCKET"],
               PREFIX=prefix, PYTHONPATH=str(peer.parent))
    return timed([sys.executable, str(peer)], env)


def peer_key(prefix: str) -> str:
    # peer_common.object_key: PREFIX/date=YYYY-MM-DD/variants.jsonl.gz, UTC date of the run.
    return f"{prefix}/date={time.strftime('%Y-%m-%d', time.gmtime())}/variants.jsonl.gz"


def measure_object(r: dict, s3, bucket: str, verify: bool) -> None:
    """Sets r["size"] and r["lines"] (None without verify) for the object at r["key"]."""
    if verify:
        r["size"], r["lines"] = object_lines(s3, bucket, r["key"])
    else:
        r["size"] = s3.head_object(Bucket=bucket, Key=r["key"])["ContentLength"]
        r["lines"] = None


def alternate(rows: dict[str, list[dict]], runs: int, run_one, s3, bucket: str, verify: bool) -> None:
    """Runs each of rows' tools `runs` times, in alternating order (a, b, b, a, ...):
    run_one(tool, i) returns timed()'s figures with the object's "key"; appends them to
    rows[tool] (before reading the object back, so it is deleted even if that fails)."""
    tools = list(rows)
    for i in range(runs):
        for tool in tools if i % 2 == 0 else tools[::-1]:
            print(f"run {i + 1}/{runs}: {tool} ...", file=sys.stderr, flush=True)
            r = run_one(tool, i)
            rows[tool].append(r)
            measure_object(r, s3, bucket, verify)


def floor_seconds(report: dict, latency_ms: float, bandwidth_mbps: float, ways: int = 1) -> float:
    """The network floor of a landline run: pages x latency + bytes on the wire / bandwidth
    (megabits/s; 0 is none), from its report; divided by `ways` pages fetched at once."""
    rate = bandwidth_mbps * 1e6 / 8
    wire = report["network"]["bytes_wire"] / rate if rate else 0.0
    return (report["pages"] * latency_ms / 1000 + wire) / ways


def floor_formula(report: dict, latency_ms: float, bandwidth_mbps: float) -> str:
    pages, wire = report["pages"], report["network"]["bytes_wire"]
    rate = bandwidth_mbps * 1e6 / 8
    wire_s = wire / rate if rate else 0.0
    per = f"{bandwidth_mbps:g} Mbit/s" if rate else "no bandwidth limit"
    return (f"{pages} pages x {latency_ms:g} ms + {wire:,} B / {per} = "
            f"{pages * latency_ms / 1000:.2f} + {wire_s:.2f} = {pages * latency_ms / 1000 + wire_s:.2f} s")


def print_network_rows(rows: dict[str, list[dict]], floor) -> None:
    """One line per run, then the medians; `floor(r)` is a landline run's sequential floor."""
    print(f"{'tool':<12} {'run':>3} {'wall s':>8} {'CPU s':>8} {'peak RSS MiB':>12} {'bytes written':>14} "
          f"{'records':>9} {'pages':>6} {'wire bytes':>12} {'floor s':>8} {'wall/floor':>10}")
    for tool, runs in rows.items():
        for i, r in enumerate(runs):
            lines = "-" if r["lines"] is None else r["lines"]
            if "report" in r:
                rep = r["report"]
                net = (f"{rep['pages']:>6} {rep['network']['bytes_wire']:>12} {floor(r):>8.2f} "
                       f"{r['wall'] / floor(r) if floor(r) else float('nan'):>10.2f}")
            else:
                net = f"{'-':>6} {'-':>12} {'-':>8} {'-':>10}"
            print(f"{tool:<12} {i + 1:>3} {r['wall']:>8.2f} {r['cpu']:>8.2f} {r['rss_mib']:>12.1f} "
                  f"{r['size']:>14} {lines:>9} {net}")
    print("medians:")
    for tool, runs in rows.items():
        line = (f"{tool:<12}     {median([r['wall'] for r in runs]):>8.2f} {median([r['cpu'] for r in runs]):>8.2f} "
                f"{median([r['rss_mib'] for r in runs]):>12.1f} {int(median([r['size'] for r in runs])):>14}")
        if "report" in runs[0]:
            floors = [floor(r) for r in runs]
            line += (f" {'':>9} {int(median([r['report']['pages'] for r in runs])):>6} "
                     f"{int(median([r['report']['network']['bytes_wire'] for r in runs])):>12} "
                     f"{median(floors):>8.2f} "
                     f"{median([r['wall'] / f for r, f in zip(runs, floors) if f]) if all(floors) else float('nan'):>10.2f}")
        print(line)
    for tool, runs in rows.items():
        for i, r in enumerate(runs):
            n = r.get("report", {}).get("network")
            if n and (r["report"]["retries"] or n["retry_wait_seconds"] or n["rate_limit_waits"]):
                print(f"note: {tool} run {i + 1}: {r['report']['retries']} retries, "
                      f"{n['retry_wait_seconds']:.2f} s waiting before retries, "
                      f"{n['rate_limit_waits']} rate-limit waits ({n['rate_limit_wait_seconds']:.2f} s)")


def download_only(url: str) -> tuple[float, int]:
    """A client that only downloads the token pages, one at a time, over one keep-alive
    connection, asking for gzip (as landline and the peer do): (wall seconds, pages). It
    decodes each body only to find the next token (C zlib, a few ms a page), so it is a
    measured floor of what this server and network allow, slightly above the true one."""
    import gzip as gz
    import http.client
    import re
    from urllib.parse import urlsplit
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    token, pages, started = None, 0, time.monotonic()
    while True:
        path = "/variants?count=200" + (f"&token={token}" if token else "")
        conn.request("GET", path, headers={"Accept-Encoding": "gzip"})
        resp = conn.getresponse()
        body = resp.read()
        if resp.getheader("Content-Encoding") == "gzip":
            body = gz.decompress(body)
        pages += 1
        m = re.search(rb'"next_token":\s*(null|"([^"]*)")\s*}\s*$', body[-300:])
        if not m or m.group(1) == b"null":
            break
        token = m.group(2).decode()
    conn.close()
    return time.monotonic() - started, pages


def network_token(a, records: int, env: dict, s3, bucket: str, tmp: Path) -> dict[str, list[dict]]:
    """landline against the v3 peer, token pagination, from the reference mock."""
    tools = ["landline"] if a.no_peer else ["landline", "peer"]
    rows: dict[str, list[dict]] = {t: [] for t in tools}
    api, url = start_api("python", records, ["--latency-ms", str(a.latency_ms),
                                             "--bandwidth-mbps", str(a.bandwidth_mbps), "--gzip"],
                         nodelay=a.nodelay)
    print(f"token: {records} records from the reference mock API at {url}", file=sys.stderr)

    def run_one(tool: str, i: int) -> dict:
        prefix = f"bench-compare/{os.getpid()}/net-token-{tool}-{i}"
        if tool == "landline":
            key = f"{prefix}/variants.jsonl.gz"
            r = run_landline(url, env, bucket, key, tmp, a.sink)
        else:
            r = run_peer(a.peer, url, env, prefix)
            key = peer_key(prefix)
        r["key"] = key
        return r

    downloads = []
    try:
        alternate(rows, a.runs, run_one, s3, bucket, not a.no_verify)
        for _ in range(a.runs):
            downloads.append(download_only(url))
    finally:
        api.terminate()
        api.wait()
        delete_objects(s3, bucket, rows)

    def floor(r: dict) -> float:
        return floor_seconds(r["report"], a.latency_ms, a.bandwidth_mbps)

    nodelay = " with TCP_NODELAY" if a.nodelay else ""
    print(f"\ntoken pagination (count = 200), reference mock API ../shared/bench/mock_api.py{nodelay}: "
          "landline and the v3 peer")
    print_network_rows(rows, floor)
    land_runs = rows["landline"]
    if "peer" in rows:
        print("landline / peer (median of the per-run ratios):")
        for field, label in [("wall", "wall"), ("cpu", "CPU"), ("rss_mib", "peak RSS"), ("size", "bytes written")]:
            ratios = [l[field] / p[field] for l, p in zip(land_runs, rows["peer"])]
            print(f"  {label:<14} {median(ratios):.3f}")
    mid = sorted(land_runs, key=floor)[(len(land_runs) - 1) // 2]
    print("network floor = pages x latency + bytes on the wire / bandwidth (pages and wire bytes from "
          "landline's report; one page at a time):")
    print(f"  {floor_formula(mid['report'], a.latency_ms, a.bandwidth_mbps)}")
    if all(floor(r) for r in land_runs):
        print(f"  landline wall / floor (median of the runs): {median([r['wall'] / floor(r) for r in land_runs]):.2f}")
        if "peer" in rows:
            # The peer fetches the same pages; its floor is taken as that of the landline run beside it.
            print(f"  peer wall / floor (median of the runs):     "
                  f"{median([p['wall'] / floor(l) for l, p in zip(land_runs, rows['peer'])]):.2f}")
    if downloads:
        walls = [w for w, _ in downloads]
        print(f"measured floor: a client that only downloads the {downloads[0][1]} pages (one keep-alive "
              f"connection, gzip; runs {', '.join(f'{w:.2f}' for w in walls)} s): median {median(walls):.2f} s")
        print(f"  landline wall / measured floor: {median([r['wall'] for r in land_runs]) / median(walls):.2f}"
              " (the server's own time per page, which the formula leaves out, is in it)")
    return rows


def network_offset(a, records: int, env: dict, s3, bucket: str, tmp: Path) -> dict[str, list[dict]]:
    """landline, offset pagination, concurrency 4 against 1, from the project's mock."""
    levels = {"landline c4": 4, "landline c1": 1}
    rows: dict[str, list[dict]] = {t: [] for t in levels}
    api, url = start_api("rust", records, ["--latency-ms", str(a.latency_ms),
                                           "--bandwidth-mbps", str(a.bandwidth_mbps), "--gzip"])
    print(f"offset: {records} records from the project's mock API at {url}", file=sys.stderr)

    def run_one(tool: str, i: int) -> dict:
        key = f"bench-compare/{os.getpid()}/net-offset-c{levels[tool]}-{i}/variants.jsonl.gz"
        text = OFFSET_PIPELINE.format(api=url, bucket=bucket, key=key, sink_extra=a.sink,
                                      concurrency=levels[tool])
        r = land(text, env, tmp)
        r["key"] = key
        return r

    try:
        alternate(rows, a.runs, run_one, s3, bucket, not a.no_verify)
    finally:
        api.terminate()
        api.wait()
        delete_objects(s3, bucket, rows)

    def floor(r: dict) -> float:
        return floor_seconds(r["report"], a.latency_ms, a.bandwidth_mbps)

    print("\noffset pagination (limit = 200), the project's mock API landline-mockapi: "
          "[source] concurrency = 4 and = 1 (floor s: the sequential floor)")
    print_network_rows(rows, floor)
    c4, c1 = rows["landline c4"], rows["landline c1"]
    speedup = median([x["wall"] / y["wall"] for x, y in zip(c4, c1)])
    verdict = "met" if speedup <= OFFSET_TARGET else "NOT met"
    print(f"c4 / c1 wall (median of the per-run ratios): {speedup:.3f} (target <= {OFFSET_TARGET}: {verdict})")
    print("sequential floor = pages x latency + bytes on the wire / bandwidth (from each run's report; "
          "one page at a time):")
    for tool, runs in rows.items():
        mid = sorted(runs, key=floor)[(len(runs) - 1) // 2]
        of = f"; wall / floor {median([r['wall'] / floor(r) for r in runs]):.2f}" if all(map(floor, runs)) else ""
        print(f"  {tool}: {floor_formula(mid['report'], a.latency_ms, a.bandwidth_mbps)}{of}")
    floors4 = [floor_seconds(r["report"], a.latency_ms, a.bandwidth_mbps, ways=4) for r in c4]
    if all(floors4):
        print("4-way floor = sequential floor / 4 (4 pages at once, each response at the full bandwidth):")
        print(f"  landline c4: {median(floors4):.2f} s; wall / floor "
              f"{median([r['wall'] / f for r, f in zip(c4, floors4)]):.2f}")
    return rows


def delete_objects(s3, bucket: str, rows: dict[str, list[dict]]) -> None:
    for runs in rows.values():
        for r in runs:
            s3.delete_object(Bucket=bucket, Key=r["key"])


def main_network(a, records: int, env: dict) -> None:
    bucket = os.environ["LANDLINE_TEST_BUCKET"]
    s3 = s3_client(env)
    parts = ["token", "offset"] if a.network_part == "both" else [a.network_part]
    print(f"network mode: {records} records, {a.runs} runs each into {a.server}; "
          f"{a.latency_ms} ms latency, {a.bandwidth_mbps:g} Mbit/s, gzip", file=sys.stderr)
    print(f"\n{platform.node()}: {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}; {records} records, "
          f"{a.runs} runs each, alternating, S3 server {a.server}; imitated network: {a.latency_ms} ms before "
          f"each page, {a.bandwidth_mbps:g} Mbit/s for each response, gzip level 1", flush=True)
    mismatched = []
    with tempfile.TemporaryDirectory() as tmp:
        for part in parts:
            run_part = network_token if part == "token" else network_offset
            rows = run_part(a, records, env, s3, bucket, Path(tmp))
            sys.stdout.flush()
            mismatched += [(part, t, i + 1) for t, runs in rows.items() for i, r in enumerate(runs)
                           if r["lines"] is not None and r["lines"] != records]
    if mismatched:
        sys.exit(f"line counts differ from {records} records: {mismatched}")


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
    net = ap.add_argument_group("network mode")
    net.add_argument("--network", action="store_true",
                     help="measure fetching on an imitated network (gzip on): the parts chosen by --network-part")
    net.add_argument("--network-part", choices=["token", "offset", "both"], default="both",
                     help="token: landline vs the v3 peer from the reference mock; offset: landline at "
                          "concurrency 4 vs 1 from the project's mock (default both)")
    net.add_argument("--latency-ms", type=int, default=100, help="wait before each page, ms (default 100)")
    net.add_argument("--bandwidth-mbps", type=float, default=100.0,
                     help="send rate of each response, megabits/s; 0 is unlimited (default 100)")
    net.add_argument("--nodelay", action="store_true",
                     help="token part: run the reference mock with Nagle's algorithm off on its "
                          "connections (TCP_NODELAY, as nginx has it), so that no response's last "
                          "segment waits for the client's delayed ACK")
    a = ap.parse_args()
    if a.runs < 1:
        ap.error("--runs must be at least 1")

    records = max(1, round(INCIDENT_RECORDS * a.scale))
    env = dict(os.environ, **server_env(a.server))
    if a.network:
        main_network(a, records, env)
        return
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
