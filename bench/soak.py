#!/usr/bin/env python3
"""Soak: many runs against an API that fails at random, each killed (SIGKILL) at random
moments and continued with `landline run --resume auto` until it completes; then every
landed object is read back and checked. Not part of CI; bounded by --runs and --attempts.

    bench/soak.sh [--runs 20] [--records 4000] [--fault-rate 0.2] [--kill-rate 0.6] [--seed 1]

The API is the reference mock (../shared/bench/mock_api.py --fault-rate F: 503 with
Retry-After: 0 or 500, which landline retries). Each run has its own ingest date. Parts are
stored uncompressed (compression_level = 0) so that each run has about ten parts to be
killed between. Prints runs, processes, kills, the page retries the API's faults caused (in
the processes that were not killed), then per object the
records lost and duplicated (the goal: 0 and 0), gzip members (1), and the multipart uploads
and checkpoints left (0).
"""
import argparse
import datetime
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib
from pathlib import Path

from benchlib import LANDLINE, PIPELINE, s3_client, server_env, start_api

ID_BASE = 10_000_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--records", type=int, default=4000)
    ap.add_argument("--fault-rate", type=float, default=0.2)
    ap.add_argument("--kill-rate", type=float, default=0.6, help="chance that a process is killed")
    ap.add_argument("--attempts", type=int, default=30, help="processes per run at most")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    env = dict(os.environ, **server_env("moto"))
    bucket = os.environ["LANDLINE_TEST_BUCKET"]
    s3 = s3_client(env)
    api, url = start_api("python", a.records, ["--fault-rate", str(a.fault_rate), "--seed", str(a.seed)])
    prefix = f"soak/{os.getpid()}"
    extra = f"compression_level = 0\n[state]\nurl = \"s3://{bucket}/{prefix}/_landline/\"\n[source.retry]\n" \
            "max_attempts = 8\ninitial_backoff_ms = 10\nmax_backoff_ms = 200\n"
    text = PIPELINE.format(api=url, bucket=bucket, key=f"{prefix}/date={{ingest_date}}/variants.jsonl.gz",
                           sink_extra=extra)
    # (TOML allows [source.retry] after other tables: it only adds to [source].)
    processes = kills = failures = retries = 0
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = Path(tmp) / "soak.toml"
        pipeline.write_text(text)
        for run in range(a.runs):
            date = (datetime.date(2024, 1, 1) + datetime.timedelta(days=run)).isoformat()
            done = False
            for _ in range(a.attempts):
                processes += 1
                report = Path(tmp) / "report.json"
                report.unlink(missing_ok=True)
                p = subprocess.Popen([str(LANDLINE), "run", str(pipeline), "--ingest-date", date, "--resume", "auto",
                                      "--report-json", str(report), "--quiet"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                killed = False
                if rng.random() < a.kill_rate:
                    try:
                        p.wait(timeout=rng.uniform(0.05, 1.5))
                    except subprocess.TimeoutExpired:
                        p.send_signal(signal.SIGKILL)
                        killed = True
                        kills += 1
                _, err = p.communicate(timeout=600)
                if killed:
                    continue
                if p.returncode != 0:
                    failures += 1
                    print(f"run {run + 1}: a process failed (exit {p.returncode}): {err.strip()[-300:]}",
                          file=sys.stderr)
                    continue
                answer = json.loads(report.read_text())
                retries += answer["retries"]
                status = answer["status"]
                if status == "complete":
                    done = True
                    break
            if not done:
                problems.append(f"run {run + 1} ({date}) did not complete in {a.attempts} processes")
                continue
            key = f"{prefix}/date={date}/variants.jsonl.gz"
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            d = zlib.decompressobj(31)
            lines = (d.decompress(body) + d.flush()).splitlines()
            ids = [json.loads(line)["id"] - ID_BASE for line in lines]
            lost = len(set(range(a.records)) - set(ids))
            duplicated = len(ids) - len(set(ids))
            members = 1 + (1 if d.unused_data else 0)
            in_order = ids == sorted(ids)
            print(f"run {run + 1:>3} {date}: {len(lines)} records, lost {lost}, duplicated {duplicated}, "
                  f"gzip members {members}, in order {in_order}", flush=True)
            if lost or duplicated or members != 1 or not in_order:
                problems.append(f"run {run + 1}: lost {lost}, duplicated {duplicated}, members {members}")
    meta = json.loads(urllib.request.urlopen(url + "/meta").read())
    api.terminate()
    api.wait()
    uploads = s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
    state = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/_landline/").get("KeyCount", 0)
    print(f"\n{a.runs} runs, {processes} processes, {kills} killed (SIGKILL), {failures} failed; API fault rate "
          f"{a.fault_rate} (seed {meta.get('seed')}): {retries} page retries in the processes not killed; open uploads left {len(uploads)}, checkpoints left {state}")
    print("problems: " + ("; ".join(problems) if problems else "none"))
    sys.exit(1 if problems or uploads or state else 0)


if __name__ == "__main__":
    main()
