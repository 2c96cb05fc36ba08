#!/usr/bin/env bash
# llama.cpp's tokenizer test pairs against our GGUF tokenizer reader (loader::gguf_vocab).
#
#   bash .ci/llama-vocab.sh          (from anywhere; needs python3 with pip, tar and cargo)
#   LLAMA_CPP_SDIST=/path/to/llama_cpp_python-0.3.36.tar.gz bash .ci/llama-vocab.sh   (offline)
#
# The pairs ship in llama-cpp-python's source package (vendor/llama.cpp/models/ggml-vocab-*.gguf
# with .inp/.out, ~78 MB unpacked). pip downloads the sdist (hash-pinned, no build, no deps) into
# a temporary folder; only the ggml-vocab-* files are extracted, into target/llama-vocab
# (git-ignored, reused by later runs). Then tests/gguf_vocab.rs's llama_cpp_vocab_pairs runs on
# them: every vocabulary we read must tokenize every pair as llama.cpp's test expects, every
# other one must be refused with an error naming it.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
version=0.3.36
sha256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
dest="$root/target/llama-vocab"
models="$dest/llama_cpp_python-$version/vendor/llama.cpp/models"

if ! compgen -G "$models/ggml-vocab-*.gguf.inp" >/dev/null; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  sdist="${LLAMA_CPP_SDIST:-}"
  if [ -z "$sdist" ]; then
    printf 'llama-cpp-python==%s --hash=sha256:%s\n' "$version" "$sha256" >"$tmp/requirements.txt"
    python3 -m pip download --disable-pip-version-check --no-input --no-deps \
      --no-binary :all: --require-hashes -r "$tmp/requirements.txt" -d "$tmp"
    sdist="$tmp/llama_cpp_python-$version.tar.gz"
  fi
  echo "$sha256  $sdist" | sha256sum -c --quiet -
  mkdir -p "$dest"
  tar -xzf "$sdist" -C "$dest" --wildcards \
    "llama_cpp_python-$version/vendor/llama.cpp/models/ggml-vocab-*"
fi

DEEPSEEK_LLAMA_CPP_MODELS="$models" \
  cargo test -p deepseek-core --test gguf_vocab llama_cpp_vocab_pairs -- --nocapture
