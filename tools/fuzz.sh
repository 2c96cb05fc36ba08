#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/) for a fixed budget with a per-input time limit and
# a memory limit, and prints one row per target: executions, crashes, timeouts, out-of-memory.
#
#   tools/fuzz.sh [SECONDS-PER-TARGET] [TARGET...]     # default 60 s, every target
#
# Environment:
#   FUZZ_TIMEOUT   seconds one input may take before it counts as a hang (default 10)
#   FUZZ_RSS_MB    memory limit in MB, RSS and single malloc (default 2048)
#   FUZZ_SANITIZER address (default) or none
#   FUZZ_WORK      working folder (default target/fuzz): per target the grown corpus, the
#                  artifacts (crash-*, timeout-*, oom-*) and the log
#
# Each target starts from its committed seeds (fuzz/corpus/TARGET), the fixed crashers
# (fuzz/regressions/TARGET) and what earlier runs found (FUZZ_WORK/TARGET/corpus); new inputs go
# to the working corpus only. Needs cargo-fuzz and a nightly toolchain. Exits 1 if any target
# had a finding (or never ran).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

SECS=${1:-60}
shift || true
TIMEOUT=${FUZZ_TIMEOUT:-10}
RSS_MB=${FUZZ_RSS_MB:-2048}
SANITIZER=${FUZZ_SANITIZER:-address}
WORK=${FUZZ_WORK:-$ROOT/target/fuzz}
case $WORK in /*) ;; *) WORK=$ROOT/$WORK ;; esac

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
	echo "tools/fuzz.sh: needs cargo-fuzz and a nightly toolchain (cargo install cargo-fuzz)" >&2
	exit 2
fi

cd fuzz
if [ $# -gt 0 ]; then
	TARGETS=("$@")
else
	mapfile -t TARGETS < <(cargo +nightly fuzz list)
fi
# Release with debug assertions (overflow checks included): a wrapped size is a finding.
BUILD=(cargo +nightly fuzz build -O --debug-assertions --sanitizer "$SANITIZER")
# (cargo fuzz build takes one target or none, which builds them all.)
[ ${#TARGETS[@]} = 1 ] && BUILD+=("${TARGETS[0]}")
mkdir -p "$WORK"
echo "building: ${BUILD[*]}"
if ! "${BUILD[@]}" >"$WORK/build.log" 2>&1; then
	tail -50 "$WORK/build.log"
	exit 2
fi
BIN=$ROOT/fuzz/target/x86_64-unknown-linux-gnu/release

dict_for() {
	case $1 in
	safetensors | safetensors_index) echo safetensors ;;
	config_json | generation_config) echo json ;;
	tokenizer_json | tokenizer_config) echo tokenizer ;;
	chat_template) echo jinja ;;
	gguf) echo gguf ;;
	esac
}

# run_target T: fuzzes T for $SECS seconds; sets execs crashes timeouts ooms leaks.
# One libFuzzer process runs until the budget is spent or it finds something (a crash, hang,
# OOM or leak ends the process and leaves an artifact); then a new one carries on with the grown
# corpus, so a finding does not end the run. One bug may be counted several times (see the
# artifacts). Setup the targets do once (loading tokenizers) is paid once per process.
run_target() {
	local t=$1 dir=$WORK/$1 remaining=$SECS start n rc log
	execs=0 crashes=0 timeouts=0 ooms=0 leaks=0
	mkdir -p "$dir/corpus" "$dir/artifacts"
	: >"$dir/log"
	local args=(-timeout="$TIMEOUT" -rss_limit_mb="$RSS_MB" -malloc_limit_mb="$RSS_MB"
		-print_final_stats=1 -artifact_prefix="$dir/artifacts/")
	local d
	d=$(dict_for "$t")
	[ -n "$d" ] && args+=(-dict="$ROOT/fuzz/dict/$d.dict")
	local seeds=("$ROOT/fuzz/corpus/$t")
	[ -d "$ROOT/fuzz/regressions/$t" ] && seeds+=("$ROOT/fuzz/regressions/$t")
	while [ "$remaining" -gt 0 ]; do
		start=$(date +%s)
		log=$dir/run.log
		mkdir -p "$dir/tmp"
		# The targets write scratch model folders under TMPDIR.
		rc=0
		TMPDIR=$dir/tmp "$BIN/$t" "${args[@]}" -max_total_time="$remaining" \
			"$dir/corpus" "${seeds[@]}" >"$log" 2>&1 || rc=$?
		rm -rf "$dir/tmp"
		cat "$log" >>"$dir/log"
		n=$(sed -nE 's/^stat::number_of_executed_units: ([0-9]+)/\1/p' "$log" | tail -1)
		execs=$((execs + ${n:-0}))
		[ "$rc" = 0 ] && break
		if grep -q 'ERROR: libFuzzer: timeout' "$log"; then
			timeouts=$((timeouts + 1))
		elif grep -qE 'ERROR: libFuzzer: out-of-memory|ERROR: AddressSanitizer: (out of memory|requested allocation size|allocation-size-too-big)' "$log"; then
			ooms=$((ooms + 1))
		elif grep -q 'ERROR: LeakSanitizer' "$log"; then
			leaks=$((leaks + 1))
		else
			crashes=$((crashes + 1))
		fi
		# A seed that fails before fuzzing starts would fail every restart.
		grep -q 'INITED' "$log" || break
		remaining=$((remaining - ($(date +%s) - start)))
	done
	rm -f "$dir/run.log"
}

printf '\n%-18s %6s %10s %8s %8s %6s %6s %7s\n' target secs execs crashes timeouts ooms leaks corpus
status=0
for t in "${TARGETS[@]}"; do
	[ -x "$BIN/$t" ] || { echo "$t: not built" >&2; status=1; continue; }
	run_target "$t"
	corpus=$(find "$WORK/$t/corpus" -type f | wc -l)
	printf '%-18s %6s %10s %8s %8s %6s %6s %7s\n' "$t" "$SECS" "$execs" "$crashes" "$timeouts" "$ooms" "$leaks" "$corpus"
	if [ $((crashes + timeouts + ooms + leaks)) -gt 0 ]; then
		status=1
		echo "    artifacts: $WORK/$t/artifacts; log: $WORK/$t/log"
	elif [ "$execs" = 0 ]; then
		status=1
		echo "    no executions: see $WORK/$t/log"
	fi
done
exit $status
