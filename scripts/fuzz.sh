#!/usr/bin/env bash
# Fuzzes page -> records -> transform -> JSON Lines for a bounded time (not run by CI).
#
#   scripts/fuzz.sh [SECONDS] [--merge]
#
# SECONDS (default 300) bounds the run (libFuzzer's -max_total_time). The fuzzer works on a
# scratch copy of the committed corpus (crates/landline/fuzz/corpus/page), so that stays
# small; --merge afterwards adds to it only the new inputs that reach new coverage.
# Installs cargo-fuzz if missing; needs a nightly toolchain. At the end it prints the
# executions, exec/s, coverage and findings; the exit status is non-zero when the fuzzer
# found a crash (panic, failed check, timeout or out-of-memory): the input is in
# crates/landline/fuzz/artifacts/page/, to be named by what it is and added to the corpus.
set -euo pipefail

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }

seconds=300
merge=false
for arg in "$@"; do
    case $arg in
        --merge) merge=true ;;
        -h | --help) usage; exit 0 ;;
        '' | *[!0-9]*) echo "fuzz.sh: unknown argument: $arg" >&2; usage >&2; exit 2 ;;
        *) seconds=$arg ;;
    esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
fuzz_dir=$root/crates/landline/fuzz
corpus=$fuzz_dir/corpus/page

if ! command -v cargo-fuzz > /dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi
if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz.sh: cargo-fuzz needs a nightly toolchain: rustup toolchain install nightly" >&2
    exit 2
fi

scratch=$(mktemp -d "${TMPDIR:-/tmp}/landline-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
mkdir "$scratch/corpus"
cp "$corpus"/* "$scratch/corpus/"
mkdir -p "$fuzz_dir/artifacts/page"
log=$fuzz_dir/artifacts/page.log
before=$(find "$fuzz_dir/artifacts/page" -type f | sort)

cd "$fuzz_dir"
echo "fuzz.sh: fuzzing for ${seconds}s on a copy of $(ls "$corpus" | wc -l) corpus inputs; log in $log" >&2
set +e
cargo +nightly fuzz run page "$scratch/corpus" -- \
    -max_total_time="$seconds" -print_final_stats=1 -dict=page.dict \
    -max_len=8192 -timeout=10 -rss_limit_mb=2048 2>&1 \
    | tee "$log" \
    | grep --line-buffered -E '(INITED|pulse|DONE|ERROR|panicked|SUMMARY|Test unit written|deadly signal)'
status=${PIPESTATUS[0]}
set -e

stat() { grep -o "stat::$1: *[0-9]*" "$log" | tail -1 | grep -o '[0-9]*$' || echo "?"; }
last=$(grep -E '^#[0-9]+' "$log" | tail -1)
echo
echo "== fuzz.sh summary"
echo "time:        ${seconds}s (bound)"
echo "executions:  $(stat number_of_executed_units)"
echo "exec/s:      $(stat average_exec_per_sec)"
echo "coverage:    $(grep -oE 'cov: [0-9]+ ft: [0-9]+' <<< "$last" || echo '?')"
echo "corpus:      $(grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' <<< "$last" || echo '?') (scratch; committed: $(ls "$corpus" | wc -l) files)"
echo "peak RSS:    $(stat peak_rss_mb) MB"
found=$(comm -13 <(echo "$before") <(find "$fuzz_dir/artifacts/page" -type f | sort))
if [ -n "$found" ]; then
    echo "findings:"
    sed 's/^/  /' <<< "$found"
    echo "  reproduce: (cd crates/landline/fuzz && cargo +nightly fuzz run page <file>)"
else
    echo "findings:    none"
fi

if $merge && [ "$status" -eq 0 ]; then
    echo "fuzz.sh: merging inputs with new coverage into $corpus" >&2
    n=$(ls "$corpus" | wc -l)
    cargo +nightly fuzz run page "$corpus" "$scratch/corpus" -- -merge=1 -max_len=8192 \
        > "$fuzz_dir/artifacts/merge.log" 2>&1
    echo "fuzz.sh: the corpus went from $n to $(ls "$corpus" | wc -l) files" >&2
fi

if [ "$status" -ne 0 ]; then
    echo "fuzz.sh: the fuzzer stopped with status $status (see $log)" >&2
    exit 1
fi
