"""Runs landline against the mock API at several sizes and prints peak RSS side by side.

Started by bench/memory.sh, which provides the S3 servers (LANDLINE_TEST_* variables) and
the release binaries. Standard library plus boto3 (from the test servers' virtualenv).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import boto3
from botocore.config import Config

ROOT = Path(__file__).resolve().parent.parent
LANDLINE = ROOT / "target/release/landline"
MOCKAPI = ROOT / "target/release/landline-mockapi"
PY_MOCK = ROOT.parent / "shared/bench/mock_api.py"

PIPELINE = """
[source]
url = "{api}/variants"
query = {{ count = 200 }}
records = "/variants"
max_pages = 100000
[source.pagination]
type = "token"
next = "/next_token"
param = "token"
[transform]
add = {{ ingest_date = "{{ingest_date}}", ingest_ts = "{{ingest_ts}}" }}
timestamps = ["created_at", "updated_at", "published_at"]
[sink]
url = "s3://{bucket}/{key}"
"""


def server_env(name: str) -> dict[str, str]:
    p = f"LANDLINE_TEST_{name.upper()}_"
    return {
        "AWS_ENDPOINT_URL": os.environ[p + "ENDPOINT"],
        "AWS_ACCESS_KEY_ID": os.environ[p + "ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": os.environ[p + "SECRET_ACCESS_KEY"],
        "AWS_REGION": os.environ["LANDLINE_TEST_REGION"],
    }


def start_api(kind: str, records: int) -> tuple[subprocess.Popen, str]:
    if kind == "rust":
        proc = subprocess.Popen([str(MOCKAPI), "--port", "0", "--total", str(records)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = proc.stdout.readline().strip()
        m = re.match(r"listening on (http://\S+)", line)
        if not m:
            proc.kill()
            sys.exit(f"mock API did not start: {line!r}")
        return proc, m.group(1)
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(PY_MOCK), "--port", str(port), "--total", str(records)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1).read()
            return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    sys.exit("reference mock API did not start within 120 s")


def count_lines(s3, bucket: str, key: str) -> int:
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    n = 0
    with gzip.GzipFile(fileobj=body) as f:
        for _ in f:
            n += 1
    return n


def run_once(api_kind: str, server: str, records: int, tmp: Path) -> dict:
    env = dict(os.environ, **server_env(server))
    bucket = os.environ["LANDLINE_TEST_BUCKET"]
    key = f"bench-memory/{api_kind}-{records}-{os.getpid()}/variants.jsonl.gz"
    api, url = start_api(api_kind, records)
    try:
        pipeline = tmp / f"p-{records}.toml"
        pipeline.write_text(PIPELINE.format(api=url, bucket=bucket, key=key))
        report_path = tmp / f"r-{records}.json"
        out = subprocess.run(["/usr/bin/time", "-v", str(LANDLINE), "run", str(pipeline),
                              "--report-json", str(report_path), "--quiet"],
                             env=env, capture_output=True, text=True)
    finally:
        api.terminate()
        api.wait()
    if out.returncode != 0:
        sys.exit(f"landline failed:\n{out.stdout}\n{out.stderr}")
    rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr).group(1))
    user = float(re.search(r"User time \(seconds\): ([\d.]+)", out.stderr).group(1))
    sys_ = float(re.search(r"System time \(seconds\): ([\d.]+)", out.stderr).group(1))
    report = json.loads(report_path.read_text())
    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"],
                      aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                      config=Config(s3={"addressing_style": "path"}))
    lines = count_lines(s3, bucket, key)
    s3.delete_object(Bucket=bucket, Key=key)
    return {
        "records": records, "lines": lines, "rss_mib": rss_kib / 1024,
        "wall": report["wall_seconds"], "cpu": user + sys_,
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
    print(f"\nlandline {LANDLINE}, mock API: {a.api}, S3 server: {a.server}")
    print(f"{'records':>9} {'lines in object':>15} {'JSON GB':>8} {'gzip MiB':>9} {'parts':>5} "
          f"{'wall s':>7} {'CPU s':>6} {'peak RSS MiB':>12}")
    for r in rows:
        ok = "" if r["lines"] == r["records"] else "  <-- MISMATCH"
        print(f"{r['records']:>9} {r['lines']:>15} {r['json_gb']:>8.2f} {r['gz_mib']:>9.1f} {r['parts']:>5} "
              f"{r['wall']:>7.2f} {r['cpu']:>6.2f} {r['rss_mib']:>12.1f}{ok}")
    if len(rows) > 1:
        ratio = rows[-1]["rss_mib"] / rows[0]["rss_mib"]
        print(f"peak RSS ratio, {rows[-1]['records']} / {rows[0]['records']} records: {ratio:.3f}")
    if any(r["lines"] != r["records"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
