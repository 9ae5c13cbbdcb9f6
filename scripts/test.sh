#!/usr/bin/env bash
# The landline test command.
#
#   scripts/test.sh [NEXTEST ARGS...]        fmt, clippy, doc, deploy templates, nextest, doc tests
#   scripts/test.sh --servers-only -- CMD... start the test servers, run CMD
#
# It installs the storage servers into the build directory (cached, so a second run
# starts in seconds) and runs them on free ports of 127.0.0.1 for the duration
# of the run (moto's virtualenv also gets the readers the format tests run on
# landed objects: zstandard, duckdb and pandas, at LANDLINE_TEST_PYTHON):
#   - moto (Python), with IAM authentication on: every request must be SigV4
#     signed with the access key this script creates (checked below);
#   - s3s-fs (Rust), storing into a temporary directory, with fixed credentials;
#   - Azurite (npm), Azure's blob service emulator, storing into a temporary
#     directory, with its well-known account and key (Shared Key signatures are
#     checked: a wrong key is refused, checked below).
# Tests find them through the LANDLINE_TEST_* variables exported below (see
# crates/landline/tests/it/s3.rs and stores.rs). No AWS_* or AZURE_* variable is exported.
#   - a second moto, without authentication, for object_store's GCS client: GCS's XML
#     API (multipart uploads included) is S3's protocol, and no GCS emulator that installs
#     from the package registries implements it (fake-gcs-server has not even the XML PUT
#     of an object; see the README's "Object storage"). The client signs in with a
#     service-account key made here (its self-signed JWT is sent, and not checked).
#
# Environment:
#   LANDLINE_TEST_SKIP_LINT=1   skip cargo fmt, cargo clippy, cargo doc and the deploy templates
#                               (scripts/validate-deploy.sh: cfn-lint and asl-validator, offline)
#   LANDLINE_S3S_LOG=info       RUST_LOG of s3s-fs (default warn)
#   CARGO_TARGET_DIR            the tools go to $CARGO_TARGET_DIR/tools
# Server logs: target/tools/logs/{moto,s3s-fs,azurite,moto-gcs}.log.
set -euo pipefail

MOTO_VERSION=5.2.5
# The readers tests/it/formats.rs checks landed objects with, in moto's virtualenv.
ZSTANDARD_VERSION=0.25.0
DUCKDB_VERSION=2.0.1
PANDAS_VERSION=3.1.1
S3S_FS_VERSION=0.14.1
# The last release whose package.json accepts the Node.js of Debian's npm (3.36 wants 21+).
AZURITE_VERSION=3.35.0
SERVER_DEADLINE_SECS=60
INSTALL_TIMEOUT_SECS=300

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TOOLS=${CARGO_TARGET_DIR:-$ROOT/target}/tools
case $TOOLS in /*) ;; *) TOOLS=$ROOT/$TOOLS ;; esac
VENV=$TOOLS/moto-venv
S3S_FS=$TOOLS/s3s-fs/bin/s3s-fs
# Its own npm prefix: installs into target/tools/npm (scripts/validate-deploy.sh) leave it be.
AZURITE_PREFIX=$TOOLS/azurite
AZURITE_BLOB=$AZURITE_PREFIX/node_modules/.bin/azurite-blob
LOGS=$TOOLS/logs

if [[ -t 2 ]]; then bold=$'\e[1m' red=$'\e[31m' off=$'\e[0m'; else bold= red= off=; fi
log() { printf '%s==> %s%s\n' "$bold" "$*" "$off" >&2; }
die() { printf '%sERROR: %s%s\n' "$red" "$*" "$off" >&2; exit 1; }

servers_only=0
if [[ ${1:-} == --servers-only ]]; then
    servers_only=1
    shift
    [[ ${1:-} == -- ]] && shift
    (($# > 0)) || die "usage: scripts/test.sh --servers-only -- CMD [ARGS...]"
elif [[ ${1:-} == -h || ${1:-} == --help ]]; then
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    exit 0
fi

command -v python3 >/dev/null || die "python3 is required"
command -v npm >/dev/null || die "npm is required for Azurite (on Debian: apt-get install npm)"
mkdir -p "$TOOLS" "$LOGS"

# ---------------------------------------------------------------- install --
install_moto() {
    # Named after every pinned version: a change of any rebuilds the virtualenv.
    local stamp=$VENV/.landline-moto-$MOTO_VERSION-zstandard-$ZSTANDARD_VERSION-duckdb-$DUCKDB_VERSION-pandas-$PANDAS_VERSION
    if [[ -f $stamp ]] && "$VENV/bin/python" -c 'import moto, boto3, zstandard, duckdb, pandas' 2>/dev/null; then
        return
    fi
    local packages=(
        "moto[server]==$MOTO_VERSION"
        "zstandard==$ZSTANDARD_VERSION"
        "duckdb==$DUCKDB_VERSION"
        "pandas==$PANDAS_VERSION"
    )
    log "installing ${packages[*]} into $VENV"
    local start=$SECONDS
    rm -rf "$VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/pip" install --quiet --no-input \
        "${packages[@]}" || die "pip install ${packages[*]} failed"
    touch "$stamp"
    log "moto and the readers installed in $((SECONDS - start)) s"
}

install_s3s_fs() {
    if [[ -x $S3S_FS ]] && [[ $("$S3S_FS" --version 2>/dev/null) == "s3s-fs $S3S_FS_VERSION" ]]; then
        return
    fi
    log "installing s3s-fs $S3S_FS_VERSION into $TOOLS/s3s-fs"
    local start=$SECONDS
    cargo install s3s-fs --version "$S3S_FS_VERSION" --features binary --locked \
        --root "$TOOLS/s3s-fs" --force || die "cargo install s3s-fs failed"
    log "s3s-fs installed in $((SECONDS - start)) s"
}

has_azurite() { [[ -x $AZURITE_BLOB ]] && [[ $("$AZURITE_BLOB" --version 2>/dev/null) == "$AZURITE_VERSION" ]]; }

install_azurite() {
    if has_azurite; then
        return
    fi
    log "installing azurite@$AZURITE_VERSION into $AZURITE_PREFIX"
    local start=$SECONDS
    rm -rf "$AZURITE_PREFIX"
    mkdir -p "$AZURITE_PREFIX"
    timeout "$INSTALL_TIMEOUT_SECS" npm install --prefix "$AZURITE_PREFIX" --no-audit --no-fund \
        --loglevel=error "azurite@$AZURITE_VERSION" ||
        die "npm install azurite@$AZURITE_VERSION failed (or took over $INSTALL_TIMEOUT_SECS s)"
    has_azurite || die "azurite-blob $AZURITE_VERSION not found in $AZURITE_PREFIX after installing it"
    log "azurite installed in $((SECONDS - start)) s"
}

# pip and npm mostly wait on the network and cargo on the CPU: install all at once.
install_moto >"$LOGS/moto-install.log" 2>&1 &
moto_install_pid=$!
install_azurite >"$LOGS/azurite-install.log" 2>&1 &
azurite_install_pid=$!
install_s3s_fs
if ! wait "$moto_install_pid"; then
    cat "$LOGS/moto-install.log" >&2
    die "installing moto failed"
fi
cat "$LOGS/moto-install.log" >&2
if ! wait "$azurite_install_pid"; then
    cat "$LOGS/azurite-install.log" >&2
    die "installing azurite failed"
fi
cat "$LOGS/azurite-install.log" >&2

# ---------------------------------------------------------------- servers --
MOTO_PID=
S3S_PID=
AZURITE_PID=
GCS_PID=
S3S_ROOT=$TOOLS/s3s-root-$$
AZURITE_ROOT=$TOOLS/azurite-root-$$
GCS_SERVICE_ACCOUNT=$TOOLS/gcs-service-account-$$.json

cleanup() {
    local pid
    for pid in $MOTO_PID $S3S_PID $AZURITE_PID $GCS_PID; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in $MOTO_PID $S3S_PID $AZURITE_PID $GCS_PID; do
        wait "$pid" 2>/dev/null || true
    done
    MOTO_PID= S3S_PID= AZURITE_PID= GCS_PID=
    rm -rf "$S3S_ROOT" "$AZURITE_ROOT" "$GCS_SERVICE_ACCOUNT"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

S3S_ACCESS_KEY_ID=landline-test-ak
S3S_SECRET_ACCESS_KEY=landline-test-sk-0123456789
BUCKET=landline-test
REGION=us-east-1
# Azurite's account and key are the well-known ones of Azure's storage emulators (public,
# documented by Microsoft), which object_store's use_emulator mode assumes too.
AZURITE_ACCOUNT=devstoreaccount1
AZURITE_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
CONTAINER=landline-test
# Letters only: object_store's GCS client percent-encodes a bucket's `-` (as `%2D`), which
# GCS decodes and moto does not.
GCS_BUCKET=landlinegcs

# Picks four free ports and starts the servers on them. Another process may take a port
# between the pick and the server's bind: the caller then starts them again.
start_servers() {
    read -r MOTO_PORT S3S_PORT AZURITE_PORT GCS_PORT < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
')
    MOTO_ENDPOINT=http://127.0.0.1:$MOTO_PORT
    S3S_ENDPOINT=http://127.0.0.1:$S3S_PORT
    # The account's URL, path-style: Azurite takes the account from the path's first segment.
    AZURITE_ENDPOINT=http://127.0.0.1:$AZURITE_PORT/$AZURITE_ACCOUNT
    GCS_ENDPOINT=http://127.0.0.1:$GCS_PORT
    log "starting moto on $MOTO_ENDPOINT, s3s-fs on $S3S_ENDPOINT, Azurite on $AZURITE_ENDPOINT and moto for GCS's XML API on $GCS_ENDPOINT (logs in $LOGS)"
    # The first three AWS actions are unauthenticated (the IAM setup below); all
    # the later ones must be signed by the access key created then.
    INITIAL_NO_AUTH_ACTION_COUNT=3 "$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" \
        >"$LOGS/moto.log" 2>&1 </dev/null &
    MOTO_PID=$!
    mkdir -p "$S3S_ROOT"
    RUST_LOG=${LANDLINE_S3S_LOG:-warn} "$S3S_FS" --host 127.0.0.1 --port "$S3S_PORT" \
        --access-key "$S3S_ACCESS_KEY_ID" --secret-key "$S3S_SECRET_ACCESS_KEY" "$S3S_ROOT" \
        >"$LOGS/s3s-fs.log" 2>&1 </dev/null &
    S3S_PID=$!
    # No telemetry (it would call out of the machine); any x-ms-version (object_store's may
    # be newer than this Azurite knows). Blobs are stored under a directory removed at exit.
    mkdir -p "$AZURITE_ROOT"
    "$AZURITE_BLOB" --blobHost 127.0.0.1 --blobPort "$AZURITE_PORT" --location "$AZURITE_ROOT" \
        --skipApiVersionCheck --disableTelemetry \
        >"$LOGS/azurite.log" 2>&1 </dev/null &
    AZURITE_PID=$!
    # No authentication: GCS clients send an OAuth2 bearer token, not a SigV4 signature.
    "$VENV/bin/moto_server" -H 127.0.0.1 -p "$GCS_PORT" >"$LOGS/moto-gcs.log" 2>&1 </dev/null &
    GCS_PID=$!
}

# Waits for the servers, sets moto's IAM up, checks that each rejects a bad signature,
# creates the bucket on both S3 servers and the container on Azurite. Prints the moto
# access key pair and role.
setup_servers() {
    MOTO_ENDPOINT=$MOTO_ENDPOINT S3S_ENDPOINT=$S3S_ENDPOINT MOTO_PID=$MOTO_PID S3S_PID=$S3S_PID \
        S3S_AK=$S3S_ACCESS_KEY_ID S3S_SK=$S3S_SECRET_ACCESS_KEY BUCKET=$BUCKET REGION=$REGION \
        AZURITE_ENDPOINT=$AZURITE_ENDPOINT AZURITE_PID=$AZURITE_PID AZURITE_ACCOUNT=$AZURITE_ACCOUNT \
        AZURITE_KEY=$AZURITE_KEY CONTAINER=$CONTAINER \
        GCS_ENDPOINT=$GCS_ENDPOINT GCS_PID=$GCS_PID GCS_BUCKET=$GCS_BUCKET GCS_SERVICE_ACCOUNT=$GCS_SERVICE_ACCOUNT \
        DEADLINE=$SERVER_DEADLINE_SECS "$VENV/bin/python" - <<'EOF'
import base64, email.utils, hashlib, hmac, json, os, socket, sys, time, urllib.error, urllib.parse, urllib.request

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

env = os.environ
deadline = time.monotonic() + float(env["DEADLINE"])


def fail(msg):
    print(f"ERROR: {msg}", file=sys.stderr)
    sys.exit(1)


def wait_for(name, pid, probe):
    last = None
    while time.monotonic() < deadline:
        try:
            os.kill(int(pid), 0)
        except OSError:
            fail(f"{name} exited during start-up")
        try:
            probe()
            return
        except Exception as e:  # noqa: BLE001
            last = e
            time.sleep(0.2)
    fail(f"{name} not ready after {env['DEADLINE']} s: {last!r}")


def moto_probe(endpoint="MOTO_ENDPOINT"):
    # Not an AWS action: doesn't use up one of the unauthenticated calls.
    with urllib.request.urlopen(env[endpoint] + "/moto-api/", timeout=2) as r:
        r.read()


def tcp_probe():
    u = urllib.parse.urlsplit(env["S3S_ENDPOINT"])
    socket.create_connection((u.hostname, u.port), timeout=2).close()


def client(service, endpoint, ak, sk):
    config = Config(
        s3={"addressing_style": "path"},
        retries={"max_attempts": 1},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=env["REGION"],
        aws_access_key_id=ak,
        aws_secret_access_key=sk,
        config=config,
    )


wait_for("moto", env["MOTO_PID"], moto_probe)
wait_for("s3s-fs", env["S3S_PID"], tcp_probe)

# moto: exactly three unauthenticated IAM calls.
iam = client("iam", env["MOTO_ENDPOINT"], "bootstrap", "bootstrap")
iam.create_user(UserName="landline-test")
key = iam.create_access_key(UserName="landline-test")["AccessKey"]
iam.put_user_policy(
    UserName="landline-test",
    PolicyName="s3-all",
    PolicyDocument=json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": ["s3:*", "sts:AssumeRole", "iam:*"], "Resource": "*"}
            ],
        }
    ),
)
ak, sk = key["AccessKeyId"], key["SecretAccessKey"]

# A role the user may assume (the tests of role_arn + source_profile, through moto's STS).
iam = client("iam", env["MOTO_ENDPOINT"], ak, sk)
role_arn = iam.create_role(
    RoleName="landline-test-role",
    AssumeRolePolicyDocument=json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}
            ],
        }
    ),
)["Role"]["Arn"]
iam.put_role_policy(
    RoleName="landline-test-role",
    PolicyName="s3-all",
    PolicyDocument=json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }
    ),
)


def expect_rejected(name, s3, codes):
    try:
        s3.list_buckets()
    except ClientError as e:
        code = e.response["Error"]["Code"]
        status = e.response["ResponseMetadata"]["HTTPStatusCode"]
        if code in codes or status == 403:
            return
        fail(f"{name}: a request with a wrong secret failed with {code} {status}, not a 403")
    fail(f"{name} accepted a request signed with a wrong secret: authentication is NOT enforced")


moto = client("s3", env["MOTO_ENDPOINT"], ak, sk)
moto.list_buckets()
expect_rejected("moto", client("s3", env["MOTO_ENDPOINT"], ak, sk + "x"), {"SignatureDoesNotMatch"})
moto.create_bucket(Bucket=env["BUCKET"])

s3s = client("s3", env["S3S_ENDPOINT"], env["S3S_AK"], env["S3S_SK"])
wait_for("s3s-fs", env["S3S_PID"], s3s.list_buckets)
expect_rejected("s3s-fs", client("s3", env["S3S_ENDPOINT"], env["S3S_AK"], "wrong"), {"SignatureDoesNotMatch"})
s3s.create_bucket(Bucket=env["BUCKET"])


def azurite_put_container(key):
    """Create Container, signed with Shared Key (as the Blob service defines it) by `key`.
    Returns the HTTP status."""
    url = f"{env['AZURITE_ENDPOINT']}/{env['CONTAINER']}?restype=container"
    headers = {
        "Content-Type": "application/octet-stream",
        "x-ms-date": email.utils.formatdate(usegmt=True),
        "x-ms-version": "2021-08-06",
    }
    path = urllib.parse.urlsplit(url).path
    string_to_sign = "\n".join(
        ["PUT", "", "", "", "", headers["Content-Type"], "", "", "", "", "", ""]
        + [f"x-ms-date:{headers['x-ms-date']}\nx-ms-version:{headers['x-ms-version']}"]
        + [f"/{env['AZURITE_ACCOUNT']}{path}\nrestype:container"]
    )
    mac = hmac.new(base64.b64decode(key), string_to_sign.encode(), hashlib.sha256)
    headers["Authorization"] = f"SharedKey {env['AZURITE_ACCOUNT']}:{base64.b64encode(mac.digest()).decode()}"
    request = urllib.request.Request(url, method="PUT", data=b"", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def azurite_rejects_a_wrong_key():
    # Connection errors (not listening yet) are retried by wait_for; any answer but 403 fails.
    status = azurite_put_container(base64.b64encode(b"not the account key").decode())
    if status != 403:
        fail(f"Azurite answered a request signed with a wrong key with {status}, not a 403: authentication is NOT enforced")


wait_for("Azurite", env["AZURITE_PID"], azurite_rejects_a_wrong_key)
status = azurite_put_container(env["AZURITE_KEY"])
if status != 201:
    fail(f"Azurite: creating the container {env['CONTAINER']} answered {status}")

# GCS's XML API on the second moto: the bucket, and a service-account key (a new RSA key
# each run, in the file GOOGLE_SERVICE_ACCOUNT names) whose base URL is that moto.
wait_for("moto (GCS)", env["GCS_PID"], lambda: moto_probe("GCS_ENDPOINT"))
client("s3", env["GCS_ENDPOINT"], "unused", "unused").create_bucket(Bucket=env["GCS_BUCKET"])
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()
fd = os.open(env["GCS_SERVICE_ACCOUNT"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as f:
    json.dump(
        {
            "type": "service_account",
            "private_key_id": "landline-test",
            "private_key": pem,
            "client_email": "landline-test@landline-test.iam.gserviceaccount.com",
            "gcs_base_url": env["GCS_ENDPOINT"],
        },
        f,
    )

print(ak, sk, role_arn)
EOF
}

start=$SECONDS
for attempt in 1 2 3; do
    start_servers
    if keys=$(setup_servers); then
        break
    fi
    if ((attempt < 3)) && grep -qs "Address already in use\|EADDRINUSE" \
        "$LOGS/moto.log" "$LOGS/s3s-fs.log" "$LOGS/azurite.log" "$LOGS/moto-gcs.log"; then
        log "a port was taken before a server could bind it: starting them again on other ports"
        cleanup
        continue
    fi
    for f in moto s3s-fs azurite moto-gcs; do
        echo "---- tail of $LOGS/$f.log" >&2
        tail -n 30 "$LOGS/$f.log" >&2 || true
    done
    die "test servers failed to start"
done
read -r MOTO_ACCESS_KEY_ID MOTO_SECRET_ACCESS_KEY MOTO_ROLE_ARN <<<"$keys"
log "servers ready in $((SECONDS - start)) s (moto enforces SigV4 with key $MOTO_ACCESS_KEY_ID)"

export LANDLINE_TEST_MOTO_ENDPOINT=$MOTO_ENDPOINT
export LANDLINE_TEST_MOTO_ACCESS_KEY_ID=$MOTO_ACCESS_KEY_ID
export LANDLINE_TEST_MOTO_SECRET_ACCESS_KEY=$MOTO_SECRET_ACCESS_KEY
export LANDLINE_TEST_MOTO_ROLE_ARN=$MOTO_ROLE_ARN
export LANDLINE_TEST_S3S_ENDPOINT=$S3S_ENDPOINT
export LANDLINE_TEST_S3S_ACCESS_KEY_ID=$S3S_ACCESS_KEY_ID
export LANDLINE_TEST_S3S_SECRET_ACCESS_KEY=$S3S_SECRET_ACCESS_KEY
export LANDLINE_TEST_REGION=$REGION
export LANDLINE_TEST_BUCKET=$BUCKET
export LANDLINE_TEST_PYTHON=$VENV/bin/python
export LANDLINE_TEST_AZURITE_ENDPOINT=$AZURITE_ENDPOINT
export LANDLINE_TEST_AZURITE_ACCOUNT=$AZURITE_ACCOUNT
export LANDLINE_TEST_AZURITE_KEY=$AZURITE_KEY
export LANDLINE_TEST_AZURITE_CONTAINER=$CONTAINER
export LANDLINE_TEST_GCS_ENDPOINT=$GCS_ENDPOINT
export LANDLINE_TEST_GCS_BUCKET=$GCS_BUCKET
export LANDLINE_TEST_GCS_SERVICE_ACCOUNT=$GCS_SERVICE_ACCOUNT

if ((servers_only)); then
    log "running: $*"
    status=0
    "$@" || status=$?
    exit "$status"
fi

# ------------------------------------------------------------------ steps --
failed=()
step() {
    local name=$1
    shift
    log "$name: $*"
    local start=$SECONDS status=0
    "$@" || status=$?
    if ((status != 0)); then
        printf '%sFAILED: %s (exit %d, %d s)%s\n' "$red" "$name" "$status" "$((SECONDS - start))" "$off" >&2
        failed+=("$name")
    else
        log "$name: ok ($((SECONDS - start)) s)"
    fi
}

if [[ ${LANDLINE_TEST_SKIP_LINT:-0} == 1 ]]; then
    log "LANDLINE_TEST_SKIP_LINT=1: skipping cargo fmt, cargo clippy, cargo doc and the deploy templates"
else
    step "cargo fmt" cargo fmt --all -- --check
    step "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
    step "cargo doc" env RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
    step "deploy templates" scripts/validate-deploy.sh
fi
if cargo nextest --version >/dev/null 2>&1; then
    step "tests (nextest)" cargo nextest run --workspace --no-fail-fast "$@"
else
    log "cargo-nextest not found: falling back to cargo test"
    step "tests (cargo test)" cargo test --workspace --no-fail-fast "$@"
fi
step "doc tests" cargo test --workspace --doc

if ((${#failed[@]})); then
    printf '%sFAILED STEPS: %s%s\n' "$red" "$(IFS=,; echo "${failed[*]}")" "$off" >&2
    exit 1
fi
log "all steps passed"
