#!/usr/bin/env bash
# The Python package as users install it (issue 21): `maturin build --release` makes one abi3
# wheel (CPython >= 3.9, manylinux, runtime CPU dispatch inside) and an sdist; the wheel goes
# into a fresh venv whose PATH has no cargo or rustc, and r1-nano must answer through `chat`.
# Prints the wheel's size and the import time.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
work=$root/target/wheel-ci
rm -rf "$work"
python3 -m venv "$work/build"
"$work/build/bin/python" -m pip --disable-pip-version-check -q install "maturin>=1.9,<2"
"$work/build/bin/maturin" build --release -m deepseek-py/Cargo.toml --out "$work/dist"
"$work/build/bin/maturin" sdist -m deepseek-py/Cargo.toml --out "$work/dist"
wheel=$(ls "$work"/dist/deepseek_rs-*-cp39-abi3-manylinux*_x86_64.whl)
ls "$work"/dist/deepseek_rs-*.tar.gz >/dev/null

python3 -m venv "$work/user"
# The user's machine: the venv alone on PATH, so neither cargo nor rustc can be found.
run() { env -i HOME="$HOME" PATH="$work/user/bin" "$@"; }
if run sh -c 'command -v cargo || command -v rustc' >/dev/null 2>&1; then
	echo "the smoke-test PATH still has a Rust toolchain" >&2
	exit 1
fi
run python -m pip --disable-pip-version-check -q install "$wheel"
run python - "$root/models/r1-nano" <<'PY'
import sys, time
t = time.perf_counter()
import deepseek_rs
print(f"import deepseek_rs: {(time.perf_counter() - t) * 1000:.0f} ms")
model = deepseek_rs.Model(sys.argv[1])
out = model.chat([{"role": "user", "content": "What is 4738 + 256?"}], max_tokens=512, temperature=0)
msg = out["choices"][0]["message"]
print(msg["reasoning_content"])
print(msg["content"])
assert msg["content"].strip() == "4738 + 256 = 4994", msg
PY
echo "wheel: $(basename "$wheel"), $(($(stat -c %s "$wheel") / 1024)) KiB"
