#!/usr/bin/env python3
"""The Lambda function run locally by cargo-lambda, against the project's mock API and moto:
`cargo lambda watch` builds landline-lambda and emulates the Lambda control plane, and this
script invokes it with `cargo lambda invoke` the way the Step Functions state machine in
deploy/ does (a `continue` answer is invoked again with its checkpoint), then reads the object
back from moto and checks it: every record once, one gzip member, no upload left open.

    scripts/lambda-local.sh [--records N] [--timeout SECONDS]

Run through scripts/lambda-local.sh, which starts the S3 test servers. cargo-lambda comes
from PyPI (`pip install --no-deps cargo-lambda`, into the test servers' virtualenv).
"""
import argparse
import gzip
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=3000)
    ap.add_argument("--timeout", type=int, default=16,
                    help="the function's timeout in seconds (the handler keeps 15 s back)")
    a = ap.parse_args()
    venv_bin = Path(sys.executable).parent
    cargo_lambda = venv_bin / "cargo-lambda"
    if not cargo_lambda.exists():
        subprocess.run([venv_bin / "pip", "install", "-q", "--no-deps", "cargo-lambda"], check=True)
    env = dict(os.environ)
    region = env["LANDLINE_TEST_REGION"]
    s3_env = {
        "AWS_ENDPOINT_URL": env["LANDLINE_TEST_MOTO_ENDPOINT"],
        "AWS_ACCESS_KEY_ID": env["LANDLINE_TEST_MOTO_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": env["LANDLINE_TEST_MOTO_SECRET_ACCESS_KEY"],
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
    }
    bucket = env["LANDLINE_TEST_BUCKET"]
    s3 = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"], region_name=region,
                      aws_access_key_id=s3_env["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=s3_env["AWS_SECRET_ACCESS_KEY"])
    # Built first, so that the emulator's own `cargo run` of the function starts at once.
    subprocess.run(["cargo", "build", "-q", "-p", "landline-mockapi", "-p", "landline-lambda"], cwd=ROOT, check=True)
    mock = subprocess.Popen([ROOT / "target/debug/landline-mockapi", "--port", "0", "--total", str(a.records)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    api = re.match(r"listening on (http://\S+)", mock.stdout.readline()).group(1)
    prefix = f"lambda-local/{os.getpid()}"
    pipeline = f"""name = "variants"
[source]
url = "{api}/variants"
query = {{ count = 20 }}
records = "/variants"
[source.pagination]
type = "token"
next = "/next_token"
param = "token"
[transform]
add = {{ ingest_date = "{{ingest_date}}", ingest_ts = "{{ingest_ts}}" }}
[sink]
url = "s3://{bucket}/{prefix}/date={{ingest_date}}/variants.jsonl.gz"
compression_level = 0
[state]
url = "s3://{bucket}/{prefix}/_landline/"
"""
    s3.put_object(Bucket=bucket, Key=f"{prefix}/pipelines/variants.toml", Body=pipeline.encode())
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env_file = Path(tmp) / "function.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in {**s3_env, "LANDLINE_LOG": "info"}.items()))
        log = open(Path(tmp) / "watch.log", "w")
        watch = subprocess.Popen([cargo_lambda, "lambda", "watch", "-p", "landline-lambda", "--invoke-port", str(port),
                                  "--env-file", env_file, "--timeout", str(a.timeout)],
                                 cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            event = {"pipeline": {"url": f"s3://{bucket}/{prefix}/pipelines/variants.toml"},
                     "ingest_date": "2024-01-02", "checkpoint": None}
            answers, started = [], time.monotonic()
            while len(answers) < 50:
                r = subprocess.run([cargo_lambda, "lambda", "invoke", "landline-lambda", "--invoke-port", str(port),
                                    "--data-ascii", json.dumps(event), "--output-format", "json"],
                                   cwd=ROOT, capture_output=True, text=True, timeout=900)
                if r.returncode != 0:
                    if not answers and time.monotonic() - started < 300:
                        time.sleep(2)  # the emulator is still starting the function
                        continue
                    sys.exit(f"invoke failed: {r.stderr}\n{(Path(tmp) / 'watch.log').read_text()[-3000:]}")
                answer = json.loads(r.stdout)
                answers.append(answer)
                print(f"invocation {len(answers)}: status {answer['status']}, records {answer['records']}, "
                      f"checkpoint {answer['checkpoint']}", flush=True)
                if answer["status"] == "complete":
                    break
                event = {**event, "checkpoint": answer["checkpoint"]}
        finally:
            watch.terminate()
            watch.wait()
            mock.terminate()
    key = f"{prefix}/date=2024-01-02/variants.jsonl.gz"
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    d = zlib.decompressobj(31)
    jsonl = d.decompress(body) + d.flush()
    lines = jsonl.splitlines()
    ids = [json.loads(line)["id"] for line in lines]
    open_uploads = s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
    state = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/_landline/").get("KeyCount", 0)
    print(f"{len(answers)} invocations; s3://{bucket}/{key}: {len(body)} bytes, {len(lines)} records "
          f"(expected {a.records}), one gzip member: {not d.unused_data}, ids in order without repeats: "
          f"{ids == sorted(set(ids))}, open uploads: {len(open_uploads)}, state objects left: {state}")
    ok = (len(lines) == a.records and not d.unused_data and ids == sorted(set(ids))
          and not open_uploads and state == 0 and gzip.decompress(body) == jsonl)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
