"""Shared pieces of the benchmark scripts: the S3 server from scripts/test.sh, the mock API,
/usr/bin/time -v, and reading a landed object back.

Standard library plus boto3 (from the test servers' virtualenv, which bench/*.sh use); zstd
objects are read with the `zstandard` module when it is importable, else with the `zstd` CLI.
"""

from __future__ import annotations

import gzip
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import boto3
from botocore.config import Config

ROOT = Path(__file__).resolve().parent.parent
# The dist profile (bench/run.sh builds it): what is published, and what the figures describe.
LANDLINE = ROOT / "target/dist/landline"
MOCKAPI = ROOT / "target/dist/landline-mockapi"
SHARED_BENCH = ROOT.parent / "shared/bench"
INCIDENT_RECORDS = 83_688

# [transform] and [sink] of every benchmark pipeline.
_TRANSFORM_SINK = """[transform]
add = {{ ingest_date = "{{ingest_date}}", ingest_ts = "{{ingest_ts}}" }}
timestamps = ["created_at", "updated_at", "published_at"]
[sink]
url = "s3://{bucket}/{key}"
{sink_extra}
"""

# Token pagination, 200 records a page (both mock APIs serve it).
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
""" + _TRANSFORM_SINK

# Offset pagination, 200 records a page, `concurrency` pages fetched at once (the project's
# mock API only).
OFFSET_PIPELINE = """
[source]
url = "{api}/offset/variants"
records = "/results"
max_pages = 100000
concurrency = {concurrency}
[source.pagination]
type = "offset"
param = "offset"
limit_param = "limit"
limit = 200
""" + _TRANSFORM_SINK

# Every record in one response, no pagination (the project's mock API only).
SINGLE_PIPELINE = """
[source]
url = "{api}/single/variants"
records = "/variants"
""" + _TRANSFORM_SINK


def server_env(name: str) -> dict[str, str]:
    """The AWS variables for the test server `name` (s3s or moto)."""
    p = f"LANDLINE_TEST_{name.upper()}_"
    region = os.environ["LANDLINE_TEST_REGION"]
    return {
        "AWS_ENDPOINT_URL": os.environ[p + "ENDPOINT"],
        "AWS_ACCESS_KEY_ID": os.environ[p + "ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": os.environ[p + "SECRET_ACCESS_KEY"],
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
    }


def s3_client(env: dict[str, str]):
    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                        config=Config(s3={"addressing_style": "path"}))


# Runs the reference mock with TCP_NODELAY on its sockets (socketserver's
# `disable_nagle_algorithm`), as nginx sets it on keep-alive connections (`tcp_nodelay on`):
# without it, the last small segment of each response waits for the client's delayed ACK,
# up to 40 ms a page on a reused connection.
_NODELAY_MOCK = ("import sys; sys.path.insert(0, sys.argv.pop(1)); import mock_api; "
                 "mock_api.Handler.disable_nagle_algorithm = True; mock_api.main(sys.argv[1:])")


def start_api(kind: str, records: int, extra: list[str] | tuple[str, ...] = (),
              nodelay: bool = False) -> tuple[subprocess.Popen, str]:
    """Starts the project's mock API (`rust`) or the reference one (`python`) serving `records`
    records; `extra` goes on its command line (e.g. `--latency-ms 100 --gzip`). `nodelay`
    (reference mock only) turns Nagle's algorithm off on its connections."""
    if kind == "rust":
        proc = subprocess.Popen([str(MOCKAPI), "--port", "0", "--total", str(records), *extra],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = proc.stdout.readline().strip()
        m = re.match(r"listening on (http://\S+)", line)
        if not m:
            proc.kill()
            sys.exit(f"mock API did not start: {line!r}")
        return proc, m.group(1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    program = (["-c", _NODELAY_MOCK, str(SHARED_BENCH)] if nodelay
               else [str(SHARED_BENCH / "mock_api.py")])
    proc = subprocess.Popen([sys.executable, *program, "--port", str(port),
                             "--total", str(records), *extra],
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


def _sample_memory(parent: int, peaks: dict, done: threading.Event) -> None:
    """Polls the command's /proc/PID/smaps_rollup every 20 ms: peak anonymous and file-backed."""
    child = None
    while not done.is_set():
        try:
            if child is None:
                kids = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
                child = int(kids[0]) if kids else None
            if child is not None:
                fields = dict(line.split(":", 1) for line in
                              Path(f"/proc/{child}/smaps_rollup").read_text().splitlines()[1:])
                anon = int(fields["Anonymous"].split()[0])
                file_backed = int(fields["Rss"].split()[0]) - anon
                peaks["anon_mib"] = max(peaks["anon_mib"], anon / 1024)
                peaks["file_mib"] = max(peaks["file_mib"], file_backed / 1024)
        except (OSError, ValueError, KeyError):
            pass  # not started yet, or already gone
        done.wait(0.02)


def timed(cmd: list[str], env: dict[str, str]) -> dict:
    """Runs `cmd` under /usr/bin/time -v; returns wall, cpu, rss_mib, and the peaks of its
    anonymous and file-backed (code, libraries) resident memory, sampled every 20 ms."""
    proc = subprocess.Popen(["/usr/bin/time", "-v", *cmd], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    peaks = {"anon_mib": 0.0, "file_mib": 0.0}
    done = threading.Event()
    sampler = threading.Thread(target=_sample_memory, args=(proc.pid, peaks, done))
    sampler.start()
    out, err = proc.communicate()
    done.set()
    sampler.join()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out}\n{err[-3000:]}")

    def grab(label: str) -> str:
        return re.search(label + r": (\S+)", err).group(1)

    wall = 0.0
    for part in grab(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\)").split(":"):
        wall = wall * 60 + float(part)
    return {
        "wall": wall,
        "cpu": float(grab(r"User time \(seconds\)")) + float(grab(r"System time \(seconds\)")),
        "rss_mib": int(grab(r"Maximum resident set size \(kbytes\)")) / 1024,
        **peaks,
    }


def object_lines(s3, bucket: str, key: str) -> tuple[int, int]:
    """(compressed size, lines) of an object, read with Python's gzip module."""
    size = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    n = 0
    with gzip.GzipFile(fileobj=body) as f:
        for _ in f:
            n += 1
    return size, n


def decoded_chunks(s3, bucket: str, key: str, compression: str = "gzip", size: int = 1 << 20):
    """The object's JSON Lines, decoded, in chunks of at most `size` bytes (constant memory).
    `compression` is the object's format as landline names it: "gzip" (Python's gzip module),
    "zstd" (every frame, one after the other: the `zstandard` module's stream reader across
    frames if it is importable, else `zstd -dc`; zstandard's one-shot decompress() would stop
    after the first frame) or "none" (the bytes as stored)."""
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    if compression == "gzip":
        with gzip.GzipFile(fileobj=body) as f:
            while chunk := f.read(size):
                yield chunk
    elif compression == "none":
        while chunk := body.read(size):
            yield chunk
    elif compression == "zstd":
        try:
            import zstandard
        except ImportError:
            zstandard = None
        if zstandard is not None:
            with zstandard.ZstdDecompressor().stream_reader(body, read_across_frames=True) as f:
                while chunk := f.read(size):
                    yield chunk
            return
        proc = subprocess.Popen(["zstd", "-dcq"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

        def feed() -> None:  # the object into zstd's stdin, beside the reading of its stdout
            try:
                while part := body.read(size):
                    proc.stdin.write(part)
            except (BrokenPipeError, ValueError):
                pass  # zstd stopped (an error, or the reader gave up early)
            finally:
                try:
                    proc.stdin.close()  # zstd sees the end (a short object fails its check)
                except BrokenPipeError:
                    pass

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        complete = False
        try:
            while chunk := proc.stdout.read(size):
                yield chunk
            complete = True
        finally:
            proc.stdout.close()
            feeder.join()
            code = proc.wait()
        if complete and code != 0:
            sys.exit(f"zstd -dc failed on s3://{bucket}/{key} (exit status {code})")
    else:
        raise ValueError(f"unknown compression {compression!r}")


def object_records(s3, bucket: str, key: str, compression: str = "gzip") -> tuple[int, int, int]:
    """(stored size, lines, decoded bytes) of an object in `compression` (decoded_chunks);
    a last line without its newline counts as a line, as object_lines() counts it."""
    size = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
    lines = decoded = 0
    last = b"\n"
    for chunk in decoded_chunks(s3, bucket, key, compression):
        lines += chunk.count(b"\n")
        decoded += len(chunk)
        last = chunk[-1:]
    return size, lines + (last != b"\n"), decoded


def gzip6_size(s3, bucket: str, key: str, compression: str = "gzip") -> int:
    """Size of `gzip -6` of the object's JSON Lines (decompressed by Python, or as
    decoded_chunks() reads an object in `compression`, piped to gzip)."""
    gz = subprocess.Popen(["gzip", "-6", "-c"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    counter = subprocess.Popen(["wc", "-c"], stdin=gz.stdout, stdout=subprocess.PIPE, text=True)
    gz.stdout.close()
    for chunk in decoded_chunks(s3, bucket, key, compression):
        gz.stdin.write(chunk)
    gz.stdin.close()
    gz.wait()
    return int(counter.communicate()[0].strip())


def median(values: list[float]) -> float:
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
