#!/usr/bin/env bash
# The crate as crates.io would get it (issue 21): docs build without warnings, and
# `cargo package -p deepseek-core` makes a crate that builds on its own (the verify step
# compiles the unpacked .crate outside the workspace) and carries its licences and README.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RUSTDOCFLAGS="-D warnings" cargo doc -p deepseek-core --no-deps
# --allow-dirty: CI may run on a tree with build products beside the sources; the list below
# is what gets published either way.
list=$(cargo package -p deepseek-core --allow-dirty --list 2>/dev/null)
for f in Cargo.toml README.md LICENSE-MIT LICENSE-APACHE src/lib.rs; do
	grep -qx "$f" <<<"$list" || { echo "the packaged crate lacks $f" >&2; exit 1; }
done
if grep -q '^tests/fixtures/' <<<"$list"; then
	echo "the packaged crate carries the test fixtures" >&2
	exit 1
fi
cargo package -p deepseek-core --allow-dirty
size=$(stat -c %s target/package/deepseek-core-*.crate)
echo "package: deepseek-core crate $((size / 1024)) KiB, builds on its own"
[ "$size" -lt $((10 * 1024 * 1024)) ] || { echo "over crates.io's 10 MB limit" >&2; exit 1; }
