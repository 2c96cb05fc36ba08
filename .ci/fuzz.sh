#!/usr/bin/env bash
# CI smoke of the fuzz targets (issue 12): builds them (nightly, ASan, debug assertions) and runs
# each for DS_FUZZ_SECS seconds (default 20) from its committed seeds and regressions, with a
# 10 s limit per input and 2 GB of memory. Fails on any crash, hang, OOM or leak; the table and
# the artifacts are in target/fuzz-ci. Longer runs: tools/fuzz.sh SECONDS.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! rustup toolchain list | grep -q '^nightly'; then
	echo "the fuzz smoke needs a nightly toolchain (rustup toolchain install nightly)" >&2
	exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
	echo "installing cargo-fuzz"
	cargo install cargo-fuzz --locked >/dev/null
fi
FUZZ_WORK=target/fuzz-ci exec tools/fuzz.sh "${DS_FUZZ_SECS:-20}"
