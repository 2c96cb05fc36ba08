#!/usr/bin/env bash
# The C examples and the C API's error-path test under AddressSanitizer (issue 12): .ci/capi.sh
# with DS_CAPI_SANITIZER=address (libdeepseek from nightly rustc -Zsanitizer=address, the C and
# C++ programs with gcc -fsanitize=address, every run checked by ASan and LeakSanitizer).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! rustup toolchain list | grep -q '^nightly'; then
	echo "the ASan checks need a nightly toolchain (rustup toolchain install nightly)" >&2
	exit 1
fi
DS_CAPI_SANITIZER=address exec bash .ci/capi.sh "$@"
