#!/usr/bin/env bash
# The C examples and the C API's error-path test under AddressSanitizer (issue 12): .ci/capi.sh
# with DS_CAPI_SANITIZER=address (libdeepseek from nightly rustc -Zsanitizer=address, the C and
# C++ programs with gcc -fsanitize=address, every run checked by ASan and LeakSanitizer).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DS_CAPI_SANITIZER=address exec bash .ci/capi.sh "$@"
