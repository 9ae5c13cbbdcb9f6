#!/usr/bin/env bash
# Validates the AWS deployment files in deploy/ offline (no AWS account, no network
# but the package registries):
#   1. cfn-lint on deploy/template.yaml (the SAM template, informational checks included);
#   2. asl-validator (npm) on deploy/statemachine.asl.json, with its DefinitionSubstitutions
#      replaced by sample values in a temporary copy (the file is not JSON until they are:
#      MaxConcurrency is substituted unquoted, as a number);
#   3. cfn-lint's own state machine checks, on a temporary plain CloudFormation template
#      that holds the substituted definition inline (the SAM template only names the file);
#   4. structural tests in Python: the template's IAM statements are exactly the expected
#      least-privilege set, the substitutions match the definition's placeholders, and a
#      small simulator runs the state machine against a fake function (continue, complete,
#      bad responses, the continuation limit), so a broken edit fails.
#
# Tools go to $CARGO_TARGET_DIR/tools (default target/tools), installed once and reused:
# cfn-lint in a virtualenv (the one scripts/test.sh makes for moto when it already has
# this cfn-lint version, else target/tools/deploy-venv), asl-validator in target/tools/npm.
#
#   scripts/validate-deploy.sh            validate deploy/
#   scripts/validate-deploy.sh DIR        validate DIR/template.yaml and DIR/statemachine.asl.json
set -euo pipefail

CFN_LINT_VERSION=1.58.0
ASL_VALIDATOR_VERSION=4.0.0
INSTALL_TIMEOUT_SECS=300

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TOOLS=${CARGO_TARGET_DIR:-$ROOT/target}/tools
case $TOOLS in /*) ;; *) TOOLS=$ROOT/$TOOLS ;; esac
LOGS=$TOOLS/logs
NPM_PREFIX=$TOOLS/npm
ASL_VALIDATOR=$NPM_PREFIX/node_modules/.bin/asl-validator

if [[ -t 2 ]]; then bold=$'\e[1m' red=$'\e[31m' off=$'\e[0m'; else bold='' red='' off=''; fi
log() { printf '%s==> %s%s\n' "$bold" "$*" "$off" >&2; }
die() { printf '%sERROR: %s%s\n' "$red" "$*" "$off" >&2; exit 1; }

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    exit 0
fi
DEPLOY=${1:-deploy}
TEMPLATE=$DEPLOY/template.yaml
ASL=$DEPLOY/statemachine.asl.json
[[ -f $TEMPLATE ]] || die "no $TEMPLATE"
[[ -f $ASL ]] || die "no $ASL"

command -v python3 >/dev/null || die "python3 is required"
command -v npm >/dev/null || die "npm is required (on Debian: apt-get install npm)"
mkdir -p "$TOOLS" "$LOGS"

# ---------------------------------------------------------------- install --
# Runs an install command bounded in time, its output in a log shown only on failure.
quietly() {
    local name=$1
    shift
    if ! timeout "$INSTALL_TIMEOUT_SECS" "$@" >"$LOGS/$name.log" 2>&1; then
        cat "$LOGS/$name.log" >&2
        die "$name failed (or took over $INSTALL_TIMEOUT_SECS s): $*"
    fi
}

has_cfn_lint() { [[ -x $1/bin/cfn-lint ]] && [[ $("$1/bin/cfn-lint" --version 2>/dev/null) == "cfn-lint $CFN_LINT_VERSION" ]]; }

PY_VENV=
for venv in "$TOOLS/deploy-venv" "$TOOLS/moto-venv"; do
    if has_cfn_lint "$venv"; then
        PY_VENV=$venv
        break
    fi
done
if [[ -z $PY_VENV ]]; then
    PY_VENV=$TOOLS/deploy-venv
    log "installing cfn-lint==$CFN_LINT_VERSION into $PY_VENV"
    start=$SECONDS
    rm -rf "$PY_VENV"
    python3 -m venv "$PY_VENV" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
    PIP_DISABLE_PIP_VERSION_CHECK=1 quietly cfn-lint-install \
        "$PY_VENV/bin/pip" install --quiet --no-input "cfn-lint==$CFN_LINT_VERSION"
    has_cfn_lint "$PY_VENV" || die "cfn-lint $CFN_LINT_VERSION not found in $PY_VENV after installing it"
    log "cfn-lint installed in $((SECONDS - start)) s"
fi

if [[ ! -x $ASL_VALIDATOR ]] || [[ $("$ASL_VALIDATOR" --version 2>/dev/null) != "$ASL_VALIDATOR_VERSION" ]]; then
    log "installing asl-validator@$ASL_VALIDATOR_VERSION into $NPM_PREFIX"
    start=$SECONDS
    mkdir -p "$NPM_PREFIX"
    quietly asl-validator-install npm install --prefix "$NPM_PREFIX" --no-audit --no-fund \
        --loglevel=error "asl-validator@$ASL_VALIDATOR_VERSION"
    [[ $("$ASL_VALIDATOR" --version 2>/dev/null) == "$ASL_VALIDATOR_VERSION" ]] ||
        die "asl-validator $ASL_VALIDATOR_VERSION not found in $NPM_PREFIX after installing it"
    log "asl-validator installed in $((SECONDS - start)) s"
fi

# --------------------------------------------------------------- validate --
WORK=$(mktemp -d "${TMPDIR:-/tmp}/validate-deploy.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# Runs one check; its output is shown only when it fails.
failed=()
check() {
    local name=$1
    shift
    local status=0
    "$@" >"$WORK/output" 2>&1 || status=$?
    if ((status != 0)); then
        cat "$WORK/output" >&2
        printf '%sFAILED: %s (exit %d)%s\n' "$red" "$name" "$status" "$off" >&2
        failed+=("$name")
    else
        log "$name: ok"
    fi
}

log "cfn-lint $CFN_LINT_VERSION ($PY_VENV), asl-validator $ASL_VALIDATOR_VERSION"

# 1. The SAM template. Exit status: errors, warnings and informational findings all fail.
check "cfn-lint $TEMPLATE" "$PY_VENV/bin/cfn-lint" --include-checks I -- "$TEMPLATE"

# 2. The definition, with sample values for its DefinitionSubstitutions: asl-validator
# rejects "${LandlineFunctionArn}" as a function name (not an ARN), and the unquoted
# ${MaxConcurrency} is not JSON until substituted. The values are distinctive so that the
# structural tests below can tell they were substituted where they belong.
SAMPLE_FUNCTION_ARN=arn:aws:lambda:us-east-1:123456789012:function:landline-sample
SAMPLE_MAX_CONCURRENCY=7
sed -e "s/\${LandlineFunctionArn}/$SAMPLE_FUNCTION_ARN/g" \
    -e "s/\${MaxConcurrency}/$SAMPLE_MAX_CONCURRENCY/g" "$ASL" >"$WORK/statemachine.asl.json"
check "asl-validator $ASL (substituted copy)" \
    "$ASL_VALIDATOR" --json-path "$WORK/statemachine.asl.json"

# 3 and 4.
check "structure of $DEPLOY (IAM, substitutions, state machine simulation)" \
    env SAMPLE_FUNCTION_ARN="$SAMPLE_FUNCTION_ARN" SAMPLE_MAX_CONCURRENCY="$SAMPLE_MAX_CONCURRENCY" \
    "$PY_VENV/bin/python" - "$TEMPLATE" "$ASL" "$WORK/statemachine.asl.json" "$WORK" <<'EOF'
import json
import os
import re
import subprocess
import sys

from cfnlint.decode import decode

template_path, asl_path, substituted_path, work = sys.argv[1:5]
sample_arn = os.environ["SAMPLE_FUNCTION_ARN"]
sample_max = int(os.environ["SAMPLE_MAX_CONCURRENCY"])
errors = []


def check(cond, msg):
    if not cond:
        errors.append(msg)
    return cond


template, matches = decode(template_path)
if template is None:
    sys.exit(f"{template_path}: cannot parse: {matches}")
resources = template["Resources"]
params = template["Parameters"]


def of_type(t):
    return {k: v for k, v in resources.items() if v["Type"] == t}


# ------------------------------------------------------------ parameters --
expected_defaults = {
    "Architecture": "arm64",
    "MemorySize": 512,
    "Timeout": 900,
    "MaxConcurrency": 4,
    "ScheduleExpression": "cron(0 3 * * ? *)",
}
for name in ["DataBucket", "DataPrefix", "PipelinePrefix", "CreateBucket", *expected_defaults]:
    check(name in params, f"parameter {name} is missing")
for name, default in expected_defaults.items():
    got = params.get(name, {}).get("Default")
    check(str(got) == str(default), f"parameter {name}: default {got!r}, expected {default!r}")
check(
    sorted(params.get("Architecture", {}).get("AllowedValues", [])) == ["arm64", "x86_64"],
    "parameter Architecture must allow exactly arm64 and x86_64",
)
for name in ["DataPrefix", "PipelinePrefix"]:
    # An empty prefix would grant arn:aws:s3:::BUCKET/* (the whole bucket).
    pattern = params.get(name, {}).get("AllowedPattern", "")
    check(pattern and not re.fullmatch(pattern, ""), f"parameter {name} must refuse an empty prefix")
    check(pattern and not re.fullmatch(pattern, "*"), f"parameter {name} must refuse a wildcard")
    check(pattern and re.fullmatch(pattern, "variants/"), f"parameter {name} must accept 'variants/'")
    check(pattern and not re.fullmatch(pattern, "variants"), f"parameter {name} must end with '/'")

# ---------------------------------------------------------------- bucket --
buckets = of_type("AWS::S3::Bucket")
check(len(buckets) == 1, "expected one (conditional) AWS::S3::Bucket")
for name, bucket in buckets.items():
    check("Condition" in bucket, f"{name}: the bucket must be created only when CreateBucket is true")
    rules = bucket["Properties"].get("LifecycleConfiguration", {}).get("Rules", [])
    check(
        any(
            r.get("Status") == "Enabled"
            and r.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation") == 1
            for r in rules
        ),
        f"{name}: needs an enabled lifecycle rule AbortIncompleteMultipartUpload DaysAfterInitiation 1",
    )

# -------------------------------------------------------------- function --
functions = of_type("AWS::Serverless::Function")
check(len(functions) == 1, "expected one AWS::Serverless::Function")
fn_name, fn = next(iter(functions.items()))
fp = fn["Properties"]
check(fp.get("Runtime") == "provided.al2023", "function: Runtime must be provided.al2023")
check(fp.get("Handler") == "bootstrap", "function: Handler must be bootstrap")
check(
    str(fp.get("CodeUri", "")).rstrip("/") == "../target/lambda/landline-lambda",
    "function: CodeUri must be ../target/lambda/landline-lambda/ (cargo lambda build's output; see README)",
)
check(fp.get("Architectures") == [{"Ref": "Architecture"}], "function: Architectures must be [!Ref Architecture]")
check(fp.get("MemorySize") == {"Ref": "MemorySize"}, "function: MemorySize must be !Ref MemorySize")
check(fp.get("Timeout") == {"Ref": "Timeout"}, "function: Timeout must be !Ref Timeout")
check("LANDLINE_LOG" in fp.get("Environment", {}).get("Variables", {}), "function: LANDLINE_LOG is not set")
# An explicit role, so that SAM adds no managed policy (AWSLambdaBasicExecutionRole
# grants the logs actions on every log group).
check("Role" in fp and "Policies" not in fp, "function: must use the explicit role, without SAM Policies")
log_groups = of_type("AWS::Logs::LogGroup")
check(
    any("RetentionInDays" in g["Properties"] for g in log_groups.values()),
    "the function's log group must have a retention",
)
check(fp.get("LoggingConfig", {}).get("LogGroup", {}).get("Ref") in log_groups, "function: LoggingConfig.LogGroup must be the log group")


# ------------------------------------------------------------------- IAM --
def sub_text(value):
    """The text of a resource ARN: !Sub 'x' and !GetAtt as readable strings."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Sub" in value:
        s = value["Fn::Sub"]
        return s if isinstance(s, str) else s[0]
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        a = value["Fn::GetAtt"]
        return "GetAtt:" + (".".join(a) if isinstance(a, list) else a)
    if isinstance(value, dict) and "Ref" in value:
        return "Ref:" + value["Ref"]
    return json.dumps(value, sort_keys=True)


def as_list(v):
    return v if isinstance(v, list) else [v]


def statements(owner, policies):
    for policy in policies:
        doc = policy.get("PolicyDocument", policy) if isinstance(policy, dict) else None
        check(isinstance(doc, dict) and "Statement" in doc, f"{owner}: only inline policy statements are expected, got {policy!r}")
        if isinstance(doc, dict):
            for st in as_list(doc.get("Statement", [])):
                yield st


grants = {}  # owner -> set of (action, resource text, condition json)
for name, res in resources.items():
    if res["Type"] == "AWS::IAM::Role":
        policies = res["Properties"].get("Policies", [])
        check(not res["Properties"].get("ManagedPolicyArns"), f"{name}: no managed policies expected")
    elif res["Type"] == "AWS::Serverless::StateMachine":
        policies = res["Properties"].get("Policies", [])
        check("Role" not in res["Properties"], f"{name}: expected SAM Policies, not a Role")
    else:
        continue
    g = grants.setdefault(name, set())
    for st in statements(name, policies):
        check(st.get("Effect") == "Allow", f"{name}: statement {st.get('Sid')}: only Allow statements expected")
        check("NotAction" not in st and "NotResource" not in st, f"{name}: no NotAction/NotResource")
        cond = json.dumps(st.get("Condition"), sort_keys=True) if "Condition" in st else ""
        for action in as_list(st.get("Action", [])):
            check("*" not in action, f"{name}: wildcard action {action!r}")
            for r in as_list(st.get("Resource", [])):
                text = sub_text(r)
                check(text != "*" and not text.endswith(":::*") and not text.endswith(":*:*"),
                      f"{name}: wildcard resource {text!r} for {action}")
                g.add((action, text, cond))

S3 = "arn:${AWS::Partition}:s3:::${DataBucket}"
DATA = S3 + "/${DataPrefix}*"
STATE = S3 + "/_landline/*"
PIPELINES = S3 + "/${PipelinePrefix}*"
LIST_COND = json.dumps({"StringLike": {"s3:prefix": ["_landline/", "_landline/*"]}}, sort_keys=True)
SM = "${AWS::StackName}-landline"
expected_function = {
    ("logs:CreateLogStream", "GetAtt:LandlineLogGroup.Arn", ""),
    ("logs:PutLogEvents", "GetAtt:LandlineLogGroup.Arn", ""),
    ("s3:PutObject", DATA, ""),
    ("s3:AbortMultipartUpload", DATA, ""),
    ("s3:ListMultipartUploadParts", DATA, ""),
    ("s3:PutObject", STATE, ""),
    ("s3:AbortMultipartUpload", STATE, ""),
    ("s3:ListMultipartUploadParts", STATE, ""),
    ("s3:GetObject", DATA, ""),  # HeadObject after a lost CompleteMultipartUpload answer
    ("s3:GetObject", STATE, ""),
    ("s3:DeleteObject", STATE, ""),
    ("s3:GetObject", PIPELINES, ""),
    ("s3:ListBucket", S3, LIST_COND),
}
expected_state_machine = {
    ("lambda:InvokeFunction", "GetAtt:LandlineFunction.Arn", ""),
    ("states:StartExecution", f"arn:${{AWS::Partition}}:states:${{AWS::Region}}:${{AWS::AccountId}}:stateMachine:{SM}", ""),
    ("states:DescribeExecution", f"arn:${{AWS::Partition}}:states:${{AWS::Region}}:${{AWS::AccountId}}:execution:{SM}/*", ""),
    ("states:StopExecution", f"arn:${{AWS::Partition}}:states:${{AWS::Region}}:${{AWS::AccountId}}:execution:{SM}/*", ""),
    ("states:RedriveExecution", f"arn:${{AWS::Partition}}:states:${{AWS::Region}}:${{AWS::AccountId}}:execution:{SM}/*", ""),
}


def compare(owner, got, expected):
    for extra in sorted(got - expected):
        errors.append(f"{owner}: unexpected grant {extra} (least privilege: update the expected set here only on purpose)")
    for missing in sorted(expected - got):
        errors.append(f"{owner}: missing grant {missing}")


compare("LandlineFunctionRole", grants.get("LandlineFunctionRole", set()), expected_function)
compare("LandlineStateMachine", grants.get("LandlineStateMachine", set()), expected_state_machine)
check(set(grants) == {"LandlineFunctionRole", "LandlineStateMachine"}, f"unexpected IAM owners: {sorted(grants)}")
check(fp.get("Role") == {"Fn::GetAtt": ["LandlineFunctionRole", "Arn"]}, "function: Role must be LandlineFunctionRole")
check(fp.get("FunctionName") == {"Fn::Sub": SM}, f"function: FunctionName must be !Sub {SM} (the log group and ARNs use it)")

# --------------------------------------------------------- state machine --
machines = of_type("AWS::Serverless::StateMachine")
check(len(machines) == 1, "expected one AWS::Serverless::StateMachine")
sm_name, sm = next(iter(machines.items()))
smp = sm["Properties"]
check(smp.get("Name") == {"Fn::Sub": SM}, f"state machine: Name must be !Sub {SM} (its own policy names it)")
check(smp.get("DefinitionUri") == os.path.basename(asl_path), "state machine: DefinitionUri must be the ASL file beside the template")
subs = smp.get("DefinitionSubstitutions", {})
check(subs.get("LandlineFunctionArn") == {"Fn::GetAtt": ["LandlineFunction", "Arn"]}, "LandlineFunctionArn must be the function's ARN")
check(subs.get("MaxConcurrency") == {"Ref": "MaxConcurrency"}, "MaxConcurrency must be !Ref MaxConcurrency")
raw = open(asl_path).read()
placeholders = set(re.findall(r"\$\{([^}]*)\}", raw))
check(placeholders == set(subs), f"placeholders in the definition {sorted(placeholders)} != DefinitionSubstitutions {sorted(subs)}")
check(re.search(r'"MaxConcurrency"\s*:\s*\$\{MaxConcurrency\}\s*,', raw) is not None,
      'the definition must say "MaxConcurrency": ${MaxConcurrency} (unquoted: substituted as a number)')
schedules = [e for e in smp.get("Events", {}).values() if e.get("Type") in ("Schedule", "ScheduleV2")]
check(len(schedules) == 1, "state machine: expected one schedule event")
for e in schedules:
    check(e["Properties"].get("Schedule") == {"Ref": "ScheduleExpression"}, "schedule: must be !Ref ScheduleExpression")
    inp = e["Properties"].get("Input", {})
    inp = inp.get("Fn::Sub") if isinstance(inp, dict) else inp
    try:
        parsed = json.loads(re.sub(r"\$\{[^}]*\}", "x", inp))
        check(isinstance(parsed.get("shards"), list) and parsed["shards"], 'schedule: Input must be {"shards": [EVENT...]}')
    except (TypeError, ValueError) as e2:
        errors.append(f"schedule: Input is not JSON: {e2}")
outputs = template.get("Outputs", {})
check("FunctionArn" in outputs and "StateMachineArn" in outputs, "Outputs FunctionArn and StateMachineArn are required")

# The definition inline in a plain CloudFormation template, for cfn-lint's own state
# machine checks (which it cannot run on a DefinitionUri).
definition = json.load(open(substituted_path))
inline = {
    "AWSTemplateFormatVersion": "2010-09-09",
    "Resources": {
        "Role": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Principal": {"Service": "states.amazonaws.com"}, "Action": "sts:AssumeRole"}],
                }
            },
        },
        "StateMachine": {
            "Type": "AWS::StepFunctions::StateMachine",
            "Properties": {"RoleArn": {"Fn::GetAtt": ["Role", "Arn"]}, "Definition": definition},
        },
    },
}
inline_path = os.path.join(work, "inline-statemachine.json")
json.dump(inline, open(inline_path, "w"), indent=1)
lint = subprocess.run([os.path.join(sys.prefix, "bin", "cfn-lint"), "--", inline_path], capture_output=True, text=True)
check(lint.returncode == 0, f"cfn-lint on the definition inline:\n{lint.stdout}{lint.stderr}")

# ------------------------------------------------ definition: structure --
states = definition.get("States", {})
maps = [(n, s) for n, s in states.items() if s.get("Type") == "Map"]
if not check(len(maps) == 1, "expected one Map state at the top level"):
    maps = [("missing", {"ItemProcessor": {"States": {}}})]
map_name, m = maps[0]
pc = m.get("ItemProcessor", {}).get("ProcessorConfig", {})
check(pc.get("Mode") == "DISTRIBUTED", "Map: ProcessorConfig.Mode must be DISTRIBUTED")
check(pc.get("ExecutionType") == "STANDARD", "Map: ExecutionType must be STANDARD (a shard may run longer than EXPRESS's 5 minutes)")
check(m.get("MaxConcurrency") == sample_max and type(m.get("MaxConcurrency")) is int,
      f"Map: MaxConcurrency must be the substituted number ({sample_max}), got {m.get('MaxConcurrency')!r}")
check(m.get("ToleratedFailurePercentage") == 0, "Map: ToleratedFailurePercentage must be 0")
check(m.get("ItemsPath") == "$.shards", "Map: ItemsPath must be $.shards")
inner = m.get("ItemProcessor", {}).get("States", {})
tasks = [(n, s) for n, s in inner.items() if s.get("Type") == "Task"]
if not check(len(tasks) == 1, "expected one Task in the ItemProcessor"):
    tasks = [("missing", {})]
task_name, task = tasks[0]
check(task.get("Resource") == "arn:aws:states:::lambda:invoke", "Task: Resource must be arn:aws:states:::lambda:invoke")
check(task.get("Parameters", {}).get("FunctionName") == sample_arn, "Task: FunctionName must be the substituted ${LandlineFunctionArn}")
check("Payload.$" in task.get("Parameters", {}), "Task: Payload.$ is missing")
retried = set()
for r in task.get("Retry", []):
    check(r.get("BackoffRate", 1) > 1, "Task: Retry without backoff")
    retried |= set(r.get("ErrorEquals", []))
for err in ["Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException", "Lambda.TooManyRequestsException"]:
    check(err in retried, f"Task: {err} is not retried")
check(inner.get(task.get("Next"), {}).get("Type") == "Choice", "Task: Next must be the Choice")
for n, s in inner.items():
    if s.get("Type") == "Fail":
        check("Error" in s and ("Cause" in s or "CausePath" in s), f"{n}: a Fail needs an Error and a Cause")


# ----------------------------------------------- definition: simulation --
# A small interpreter for the part of the States Language (JSONPath mode) the definition
# uses; anything else is an error, so that an edit using more must extend it here.
class Runtime(Exception):
    """States.Runtime: a path that matches nothing, a bad argument."""


class Failed(Exception):
    def __init__(self, error, cause):
        super().__init__(f"{error}: {cause}")
        self.error, self.cause = error, cause


MISSING = object()


def get_path(path, data, ctx):
    if path.startswith("$$"):
        node, rest = ctx, path[2:]
    elif path.startswith("$"):
        node, rest = data, path[1:]
    else:
        raise Runtime(f"not a path: {path!r}")
    for part in filter(None, rest.split(".")):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            raise Runtime(f"unsupported path syntax in {path!r}")
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def must(path, data, ctx):
    v = get_path(path, data, ctx)
    if v is MISSING:
        raise Runtime(f"the path {path!r} matches nothing in {json.dumps(data)}")
    return v


def parse_call(text, data, ctx):
    """Evaluates an intrinsic function call, States.Name(arg, ...)."""
    pos = 0

    def skip():
        nonlocal pos
        while pos < len(text) and text[pos] == " ":
            pos += 1

    def value():
        nonlocal pos
        skip()
        if text.startswith("States.", pos):
            m = re.compile(r"States\.([A-Za-z]+)\(").match(text, pos)
            if not m:
                raise Runtime(f"bad intrinsic at {text[pos:]!r}")
            pos = m.end()
            args = []
            skip()
            if text[pos] != ")":
                while True:
                    args.append(value())
                    skip()
                    if text[pos] == ",":
                        pos += 1
                        continue
                    if text[pos] == ")":
                        break
                    raise Runtime(f"expected , or ) at {text[pos:]!r}")
            pos += 1
            return intrinsic(m.group(1), args)
        if text[pos] == "'":
            pos += 1
            out = []
            while text[pos] != "'":
                if text[pos] == "\\":
                    pos += 1
                    out.append("\\" + text[pos] if text[pos] in "{}" else text[pos])
                else:
                    out.append(text[pos])
                pos += 1
            pos += 1
            return "".join(out)
        if text[pos] == "$":
            m = re.compile(r"\$\$?[A-Za-z0-9_.]*").match(text, pos)
            pos = m.end()
            return must(m.group(0), data, ctx)
        m = re.compile(r"-?\d+(\.\d+)?|true|false|null").match(text, pos)
        if not m:
            raise Runtime(f"bad argument at {text[pos:]!r}")
        pos = m.end()
        return json.loads(m.group(0))

    result = value()
    skip()
    if pos != len(text):
        raise Runtime(f"trailing text in {text!r}")
    return result


def intrinsic(name, args):
    if name == "MathAdd":
        a, b = args
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in args):
            raise Runtime(f"States.MathAdd needs integers: {args}")
        return a + b
    if name == "JsonMerge":
        a, b, deep = args
        if not (isinstance(a, dict) and isinstance(b, dict)) or deep is not False:
            raise Runtime(f"States.JsonMerge(object, object, false) expected: {args}")
        return {**a, **b}
    if name == "JsonToString":
        (a,) = args
        return json.dumps(a, separators=(",", ":"))
    if name == "Format":
        template, *rest = args
        pieces = re.split(r"(?<!\\)\{\}", template)
        if len(pieces) - 1 != len(rest):
            raise Runtime(f"States.Format: {len(pieces) - 1} placeholders, {len(rest)} arguments")
        out = pieces[0]
        for arg, piece in zip(rest, pieces[1:]):
            if isinstance(arg, (dict, list)):
                raise Runtime("States.Format takes no objects or arrays")
            out += (arg if isinstance(arg, str) else json.dumps(arg)) + piece
        return out.replace("\\{", "{").replace("\\}", "}")
    raise Runtime(f"intrinsic States.{name} is not simulated here: extend the simulator")


def payload(tmpl, data, ctx):
    if isinstance(tmpl, dict):
        out = {}
        for k, v in tmpl.items():
            if k.endswith(".$"):
                out[k[:-2]] = parse_call(v, data, ctx) if v.startswith("States.") else must(v, data, ctx)
            else:
                out[k] = payload(v, data, ctx)
        return out
    if isinstance(tmpl, list):
        return [payload(v, data, ctx) for v in tmpl]
    return tmpl


def put_result(state, data, result):
    path = state.get("ResultPath", "$")
    if path is None:
        return data
    if path == "$":
        return result
    if not re.fullmatch(r"\$(\.[A-Za-z_][A-Za-z0-9_]*)+", path):
        raise Runtime(f"unsupported ResultPath {path!r}")
    out = json.loads(json.dumps(data))
    node = out
    parts = path[2:].split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = result
    return out


COMPARATORS = {
    "IsPresent": lambda v, x: (v is not MISSING) == x,
    "IsString": lambda v, x: isinstance(v, str) == x,
    "IsNull": lambda v, x: (v is None) == x,
    "StringEquals": lambda v, x: isinstance(v, str) and v == x,
    "NumericGreaterThanEquals": lambda v, x: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= x,
    "NumericLessThan": lambda v, x: isinstance(v, (int, float)) and not isinstance(v, bool) and v < x,
}


def rule_matches(rule, data, ctx):
    if "And" in rule:
        return all(rule_matches(r, data, ctx) for r in rule["And"])
    if "Or" in rule:
        return any(rule_matches(r, data, ctx) for r in rule["Or"])
    if "Not" in rule:
        return not rule_matches(rule["Not"], data, ctx)
    ops = [k for k in rule if k not in ("Variable", "Next", "Comment")]
    if len(ops) != 1 or ops[0] not in COMPARATORS:
        raise Runtime(f"Choice rule {rule} is not simulated here: extend the simulator")
    value = get_path(rule["Variable"], data, ctx)
    if value is MISSING and ops[0] != "IsPresent":
        # As in Step Functions: a comparison on a path that matches nothing fails the state.
        raise Runtime(f"Choice: {rule['Variable']} matches nothing (test IsPresent first)")
    return COMPARATORS[ops[0]](value, rule[ops[0]])


def run(machine, data, ctx, invoke, budget):
    name = machine["StartAt"]
    while True:
        s = machine["States"][name]
        budget[0] -= 1
        if budget[0] < 0:
            raise RuntimeError("the simulation did not stop (an endless loop)")
        t = s["Type"]
        if t == "Task":
            if s["Resource"] != "arn:aws:states:::lambda:invoke":
                raise Runtime(f"{name}: only lambda:invoke tasks are simulated")
            params = payload(s["Parameters"], data, ctx)
            result = {"StatusCode": 200, "ExecutedVersion": "$LATEST", "Payload": invoke(params["FunctionName"], params["Payload"])}
            if "ResultSelector" in s:
                result = payload(s["ResultSelector"], result, ctx)
            data = put_result(s, data, result)
            if "OutputPath" in s:
                data = must(s["OutputPath"], data, ctx)
        elif t == "Pass":
            result = payload(s["Parameters"], data, ctx) if "Parameters" in s else data
            data = put_result(s, data, result)
        elif t == "Choice":
            name = next((r["Next"] for r in s["Choices"] if rule_matches(r, data, ctx)), s.get("Default"))
            if name is None:
                raise Runtime("States.NoChoiceMatched")
            continue
        elif t == "Succeed":
            return data
        elif t == "Fail":
            cause = parse_call(s["CausePath"], data, ctx) if "CausePath" in s else s.get("Cause")
            raise Failed(s["Error"], cause)
        elif t == "Map":
            items = must(s["ItemsPath"], data, ctx)
            results = []
            for i, item in enumerate(items):
                ictx = {"Map": {"Item": {"Value": item, "Index": i}}}
                idata = payload(s["ItemSelector"], data, ictx) if "ItemSelector" in s else item
                results.append(run(s["ItemProcessor"], idata, ictx, invoke, budget))
            data = put_result(s, data, results)
        else:
            raise Runtime(f"{name}: state type {t} is not simulated here: extend the simulator")
        if s.get("End"):
            return data
        name = s["Next"]


def fake_function(responses):
    """A function that answers each event with the next of `responses(event, n)`."""
    calls = []

    def invoke(arn, event):
        if arn != sample_arn:
            raise Runtime(f"invoked {arn}, not the substituted function ARN")
        calls.append(json.loads(json.dumps(event)))
        return responses(event, len(calls))

    return invoke, calls


def execute(shards, responses):
    invoke, calls = fake_function(responses)
    return run(definition, {"shards": shards}, {}, invoke, [10_000]), calls


def expect_failure(label, error, shards, responses):
    try:
        out, _ = execute(shards, responses)
    except Failed as f:
        check(f.error == error, f"{label}: failed with {f.error}, expected {error} ({f.cause})")
        return f
    except Runtime as e:
        check(error == "States.Runtime", f"{label}: States.Runtime ({e}), expected {error}")
        return None
    errors.append(f"{label}: succeeded ({out}), expected {error}")


shard = {"pipeline": {"url": "s3://bucket/pipelines/variants.toml"}, "ingest_date": "2024-01-02", "vars": {"region": "eu"}, "checkpoint": None}
report = {"records": 10, "pages": 1}


def cont(n):
    return {**report, "status": "continue", "checkpoint": f"s3://bucket/_landline/checkpoints/c{n}.json"}


def done():
    return {**report, "status": "complete", "checkpoint": None}


def scenario(fn):
    """Runs one simulated scenario; any exception is reported as its failure."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001
        errors.append(f"simulation {fn.__name__}: {type(e).__name__}: {e}")
    return fn


@scenario
def continue_twice_then_complete():
    # The event is the planned one, then the planned one with each returned checkpoint;
    # nothing else of it changes.
    out, calls = execute([shard], lambda e, n: cont(n) if n <= 2 else done())
    check(len(calls) == 3, f"continue twice then complete: {len(calls)} invocations, expected 3")
    check(calls[:1] == [shard], f"first invocation: {calls[:1]}, expected the planned event {shard}")
    for i in (1, 2):
        want = {**shard, "checkpoint": f"s3://bucket/_landline/checkpoints/c{i}.json"}
        got = calls[i] if i < len(calls) else None
        check(got == want, f"invocation {i + 1}: {got}, expected {want}")
    check(isinstance(out, list) and len(out) == 1 and out[0].get("status") == "complete"
          and out[0].get("shard") == shard and out[0].get("invocations") == 3,
          f"output of a completed shard: {out}")


@scenario
def three_shards():
    # Each shard its own loop, results in order; a shard without a checkpoint key keeps none.
    shards = [{"pipeline": {"toml": "x"}, "ingest_date": f"2024-01-0{d}"} for d in (1, 2, 3)]
    out, calls = execute(shards, lambda e, n: done() if e.get("checkpoint") or e["ingest_date"] != "2024-01-02" else cont(n))
    check([c["ingest_date"] for c in calls] == ["2024-01-01", "2024-01-02", "2024-01-02", "2024-01-03"], f"three shards: calls {calls}")
    check(calls[:1] == shards[:1], "a complete-at-once shard must be invoked with the planned event unchanged")
    check(len(out) == 3 and [o.get("invocations") for o in out] == [1, 2, 1], f"three shards: output {out}")


@scenario
def always_continue():
    # The continuation limit: 100 continuations, then Fail, naming the event to resume with.
    counter = []
    f = expect_failure("always continue", "Landline.TooManyContinuations", [shard],
                       lambda e, n: (counter.append(n), cont(n))[1])
    check(len(counter) == 101, f"always continue: {len(counter)} invocations, expected 101")
    check(f is not None and "c101.json" in (f.cause or ""), "TooManyContinuations: the cause must name the last checkpoint")


@scenario
def bad_responses():
    expect_failure("continue without a checkpoint", "Landline.NoCheckpoint", [shard], lambda e, n: {"status": "continue", "checkpoint": None})
    expect_failure("status failed", "Landline.UnexpectedStatus", [shard], lambda e, n: {"status": "failed", "checkpoint": None})
    expect_failure("status not a string", "Landline.UnexpectedStatus", [shard], lambda e, n: {"status": 3, "checkpoint": None})
    expect_failure("no status", "Landline.NoStatus", [shard], lambda e, n: {"checkpoint": None})
    # The contract: checkpoint is always in the response (a URL or null).
    expect_failure("no checkpoint key", "States.Runtime", [shard], lambda e, n: {"status": "complete"})


for e in errors:
    print(f"  - {e}", file=sys.stderr)
if errors:
    sys.exit(1)
print(f"{template_path}: IAM grants as expected; {asl_path}: structure and 8 simulated executions as expected", file=sys.stderr)
EOF

if ((${#failed[@]})); then
    printf '%sFAILED: %s%s\n' "$red" "$(IFS=,; echo "${failed[*]}")" "$off" >&2
    exit 1
fi
log "deploy templates valid (offline: nothing was deployed)"
