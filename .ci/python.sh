#!/usr/bin/env bash
# Python bindings: builds deepseek_rs from source into a fresh venv and runs its pytest suite.
#
#   bash .ci/python.sh [pytest args...]        (from anywhere; needs python3 >= 3.9 and cargo)
#
# The wheel is built by pip through the PEP 517 backend in deepseek-py/pyproject.toml (maturin,
# fetched by pip's build isolation), exactly as `pip install ./deepseek-py` does for a user,
# except that MATURIN_PEP517_ARGS selects Cargo's dev profile (opt-level 1 in this workspace):
# it reuses what `cargo test` built and the tiny fixtures run fast. The venv lives in
# target/python-ci (git-ignored) and is recreated on every run.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/target/python-ci"
pip=("$venv/bin/python" -m pip --disable-pip-version-check --no-input)

rm -rf "$venv"
python3 -m venv "$venv"
"${pip[@]}" install -q pytest numpy safetensors jsonschema
echo "building deepseek_rs (dev profile)..."
MATURIN_PEP517_ARGS="--profile dev" "${pip[@]}" install -q ./deepseek-py

# Import the installed package, never the source tree's python/ folder (it has no extension).
exec "$venv/bin/python" -m pytest deepseek-py/tests -q -p no:cacheprovider "$@"
