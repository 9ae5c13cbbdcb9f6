#!/usr/bin/env python3
"""Soak: many runs against an API and a store that fail at random, each process killed
(SIGKILL) at random moments and continued with `landline run --resume auto` until it
completes; then every landed object is read back and checked. Not part of CI; bounded by
--runs and --attempts.

    bench/soak.sh [--runs 20] [--records 4000] [--fault-rate 0.2] [--store-fault-rate 0.05]
                  [--store-attempts 3] [--kill-rate 0.6] [--attempts 30] [--seed 1]
                  [--trace FILE]

The API is the reference mock (../shared/bench/mock_api.py --fault-rate F: 503 with
Retry-After: 0 or 500, which landline retries). The store is moto, reached by landline
through bench/store_faults.py (started in this process, seeded with --seed), which gives a
request a fault with probability --store-fault-rate: a 503 SlowDown or a 500 InternalError
instead of forwarding it, an answer lost (forwarded, then the connection closed without an
answer) or an answer body cut halfway (0 turns the proxy off: landline talks to moto
directly). landline retries each store request up to --store-attempts times (10-200 ms
backoff); a process that fails all the same (exit code not 0) is continued with
`--resume auto` like a killed one. Every check (the objects read back, the open uploads and
the checkpoints left) asks moto directly, not through the proxy.

Each run has its own ingest date. Parts are stored uncompressed (compression_level = 0) so
that each run has about 18 parts to be killed between. Prints, per run, the records lost and
duplicated (the goal: 0 and 0), gzip members (1) and order; per failed process its exit code,
the last line of its stderr (and the line the error starts on, when the error quotes a
store's multi-line answer) and the store faults injected while it ran; then runs, processes,
kills, failures, the page retries the API's faults caused (in the processes that were not
killed), the store faults injected (in all, by kind, by operation, by both), the requests by
operation and the last store fault before each failed process; and the multipart uploads
and checkpoints left (the goal: 0 and 0), each upload left with the faults its run's Create,
Complete and AbortMultipartUpload requests got. --trace writes each process (start, end,
killed, exit code, stderr) and each store request (when, operation, fault, status answered)
to FILE as JSON Lines, in time order. Exits 1 if a run did not complete in --attempts
processes or lost, duplicated or reordered records, or if an upload or a checkpoint was left.
"""
import argparse
import collections
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
from store_faults import FaultProxy

ID_BASE = 10_000_000
# The requests that start and end an upload: what a leftover upload's run is checked for.
UPLOAD_OPS = ("CreateMultipartUpload", "CompleteMultipartUpload", "AbortMultipartUpload")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--records", type=int, default=4000)
    ap.add_argument("--fault-rate", type=float, default=0.2, help="chance that a page request fails")
    ap.add_argument("--store-fault-rate", type=float, default=0.05,
                    help="chance that a store request gets a fault (0: no fault proxy)")
    ap.add_argument("--store-attempts", type=int, default=3, help="[sink.retry] max_attempts")
    ap.add_argument("--kill-rate", type=float, default=0.6, help="chance that a process is killed")
    ap.add_argument("--attempts", type=int, default=30, help="processes per run at most")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--trace", metavar="FILE",
                    help="write JSON Lines: each process's start and end, and every store request through the proxy")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    env = dict(os.environ, **server_env("moto"))
    env.pop("AWS_ENDPOINT_URL_S3", None)  # it would win over AWS_ENDPOINT_URL
    bucket = os.environ["LANDLINE_TEST_BUCKET"]
    s3 = s3_client(env)  # moto directly: every check bypasses the proxy
    proxy = None
    landline_env = env
    if a.store_fault_rate > 0:
        proxy = FaultProxy(env["AWS_ENDPOINT_URL"], a.store_fault_rate, a.seed).start()
        landline_env = dict(env, AWS_ENDPOINT_URL=proxy.url)
    api, url = start_api("python", a.records, ["--fault-rate", str(a.fault_rate), "--seed", str(a.seed)])
    try:
        code = soak(a, rng, landline_env, s3, bucket, url, proxy)
    finally:
        if proxy is not None:
            proxy.stop()
        api.terminate()
        api.wait()
    sys.exit(code)


def soak(a, rng: random.Random, env: dict, s3, bucket: str, url: str, proxy: FaultProxy | None) -> int:
    prefix = f"soak/{os.getpid()}"
    extra = f"compression_level = 0\n[state]\nurl = \"s3://{bucket}/{prefix}/_landline/\"\n[source.retry]\n" \
            "max_attempts = 8\ninitial_backoff_ms = 10\nmax_backoff_ms = 200\n" \
            f"[sink.retry]\nmax_attempts = {a.store_attempts}\ninitial_backoff_ms = 10\nmax_backoff_ms = 200\n"
    text = PIPELINE.format(api=url, bucket=bucket, key=f"{prefix}/date={{ingest_date}}/variants.jsonl.gz",
                           sink_extra=extra)
    # (TOML allows [source.retry] and [sink.retry] after other tables: they only add to
    # [source] and [sink].)
    processes = kills = failures = retries = 0
    problems = []
    run_faults: dict[str, list] = {}  # date: the store faults injected while its processes ran
    events = []  # for --trace
    failed_after = collections.Counter()  # the last store fault before each failure
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
                started = time.monotonic()
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
                events.append({"t": round(started, 4), "end": round(time.monotonic(), 4), "run": run + 1,
                               "date": date, "process": processes, "killed": killed, "exit": p.returncode,
                               "stderr": err.strip()[-4000:]})
                faults = proxy.faults_since(started) if proxy else []
                run_faults.setdefault(date, []).extend(faults)
                if killed:
                    continue
                if p.returncode != 0:
                    failures += 1
                    lines = err.strip().splitlines() or ["(no stderr)"]
                    # The error is one line, unless it quotes a store's answer (XML, several lines).
                    error = next((line for line in reversed(lines) if line.startswith("error: ")), lines[-1])
                    injected = ", ".join(f"{kind} {op}" for _, kind, op, _ in faults) or "none"
                    failed_after[" ".join(faults[-1][1:3]) if faults else "no store fault"] += 1
                    print(f"run {run + 1:>3} {date}: process {processes} failed (exit {p.returncode}): {lines[-1]}"
                          + (f"\n    {error[:1500]}" if error != lines[-1] else "")
                          + f"\n    store faults while it ran: {injected}", flush=True)
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
    uploads = s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
    state = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/_landline/").get("KeyCount", 0)
    print(f"\n{a.runs} runs, {processes} processes, {kills} killed (SIGKILL), {failures} failed; API fault rate "
          f"{a.fault_rate} (seed {meta.get('seed')}): {retries} page retries in the processes not killed")
    if proxy is None:
        print("store faults: none (--store-fault-rate 0: landline talked to moto directly)")
    else:
        c = proxy.counts()

        def listing(counts: dict) -> str:
            return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"

        print(f"store fault rate {a.store_fault_rate} (seed {c['seed']}, {a.store_attempts} attempts a request): "
              f"{c['faults']} faults injected in {c['requests']} requests")
        print(f"  by kind: {listing(c['by_kind'])}")
        print(f"  by operation: {listing(c['by_op'])}")
        print(f"  by kind and operation: {listing(c['by_kind_op'])}")
        print(f"  requests by operation: {listing(c['requests_by_op'])}")
        if c["proxy_errors"]:
            print(f"  proxy errors (mostly connections of killed processes): {listing(c['proxy_errors'])}")
        if failures:
            print(f"  the last store fault before each failed process: {listing(dict(failed_after.most_common()))}")
    print(f"open uploads left {len(uploads)}, checkpoints left {state}")
    for u in uploads:
        date = u["Key"].split("date=", 1)[-1].split("/", 1)[0]
        upload_faults = collections.Counter(f"{kind} {op}" for _, kind, op, _ in run_faults.get(date, [])
                                            if op in UPLOAD_OPS)
        faults = ", ".join(f"{k} {v}" for k, v in upload_faults.most_common()) or "none"
        print(f"  upload left: {u['Key']} {u['UploadId'][:16]}…; its run's store faults on "
              f"Create/Complete/AbortMultipartUpload: {faults}")
    if state:
        for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/_landline/").get("Contents", []):
            print(f"  checkpoint left: {o['Key']}")
    if a.trace:
        lines = [dict(e, event="process") for e in events]
        lines += [dict(r, event="request") for r in (proxy.trace() if proxy else [])]
        with open(a.trace, "w") as f:
            for line in sorted(lines, key=lambda e: e["t"]):
                f.write(json.dumps(line) + "\n")
        print(f"trace: {a.trace} ({len(events)} processes, {len(lines) - len(events)} store requests)")
    if uploads:
        problems.append(f"{len(uploads)} open uploads left")
    if state:
        problems.append(f"{state} checkpoints left")
    print("problems: " + ("; ".join(problems) if problems else "none"))
    return 1 if problems else 0

if __name__ == "__main__":
    main()
