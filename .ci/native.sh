#!/usr/bin/env bash
# The kernel and quantisation tests again in a build for this CPU (-C target-cpu=native), where
# the compiler may vectorise the portable and scalar paths differently: every ISA level must
# still agree with the scalar reference.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS="-C target-cpu=native" CARGO_TARGET_DIR=target/native \
  cargo test -p deepseek-core --lib -- kernels:: quant::
