#!/usr/bin/env bash
# deepseek-rs against llama.cpp on the same DeepseekV3-layout bench model, same machine, same
# threads, interleaved runs, medians; prints ratios and each engine's decode as a share of the
# memory-bandwidth ceiling. Run by hand (takes ~20 min the first time: it builds llama.cpp):
#
#   bash benches/compare_llama_cpp.sh [REPS]          (REPS: samples per engine, default 5)
#   BENCH_SHAPE=qwen2-1.5b bash benches/compare_llama_cpp.sh   (an R1-Distill-Qwen-1.5B shape)
#   SECTIONS=depth bash benches/compare_llama_cpp.sh 3  (only the long-context rows, below)
#
# The depth section (SECTIONS=depth, or all, the default) races decode after DEPTHS cached tokens
# (default "0 4096 16384"; llama-bench -d N) and a 4096-token prefill, 2 threads, q8_0 weights,
# each engine on the same GGUF file, with the same cache type: llama.cpp's f16 against our bf16
# (the same bytes per value) and q8_0 against q8_0 (llama.cpp needs flash attention for a q8_0
# V cache; both of its cache types run with -fa 1). It also prints each engine's decode at
# every depth as a fraction of its depth-0 speed: the slope is the point. LLAMA_BENCH=path uses
# an existing llama-bench instead of building one. CACHE_PAIRS (default "bf16/f16 q8_0/q8_0",
# ours/llama.cpp) and PREFILL (default 4096; empty skips the prefill row) shorten a run on a
# busy machine.
#
# Everything it fetches or builds goes to $DEEPSEEK_BENCH_DIR (default ~/.cache/deepseek-bench):
# llama-cpp-python's sdist from PyPI (its vendored llama.cpp builds llama-bench and
# llama-quantize, and ships convert_hf_to_gguf.py), a venv for the converter, the bench model
# (tools/make_bench_model.py, with the real R1 tokenizer so the converter knows it) and GGUFs.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
reps="${1:-5}"
work="${DEEPSEEK_BENCH_DIR:-$HOME/.cache/deepseek-bench}"
mkdir -p "$work"
venv="$work/venv"
shape="${BENCH_SHAPE:-deepseek-v3}"
case "$shape" in
  deepseek-v3) model="$work/bench-model"; gguf="$work/bench" ;;
  qwen2-1.5b) model="$work/bench-qwen2-1.5b"; gguf="$work/bench-qwen2-1.5b" ;;
  *) echo "unknown BENCH_SHAPE $shape (deepseek-v3, qwen2-1.5b)" >&2; exit 2 ;;
esac
say() { printf '\n== %s\n' "$*" >&2; }

if [ ! -x "$venv/bin/python" ]; then
  say "venv for the converter (numpy, torch, transformers, cmake)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q numpy torch transformers safetensors sentencepiece cmake ninja
fi
export PATH="$venv/bin:$PATH"

if [ ! -d "$work/llama-src" ]; then
  say "llama-cpp-python sdist from PyPI"
  "$venv/bin/pip" download -q --no-deps --no-binary llama-cpp-python llama-cpp-python -d "$work/sdist"
  mkdir -p "$work/llama-src"
  tar xzf "$work"/sdist/llama_cpp_python-*.tar.gz -C "$work/llama-src" --strip-components=1
fi
llama="$work/llama-src/vendor/llama.cpp"
llama_bench="${LLAMA_BENCH:-$llama/build/bin/llama-bench}"
if [ ! -x "$llama_bench" ]; then
  say "building llama-bench and llama-quantize (-march=native)"
  cmake -S "$llama" -B "$llama/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF >/dev/null
  cmake --build "$llama/build" -j"$(nproc)" --target llama-bench llama-quantize >/dev/null
fi

sections="${SECTIONS:-all}"
if [ ! -f "$model/model.safetensors" ] && { [ "$sections" != depth ] || [ ! -f "$gguf-q8_0.gguf" ]; }; then
  say "bench model"
  (cd "$root" && "$venv/bin/python" tools/make_bench_model.py "$model" --shape "$shape")
fi
if [ ! -f "$gguf-bf16.gguf" ] && [ ! -f "$gguf-q8_0.gguf" ]; then
  say "converting to GGUF"
  "$venv/bin/pip" install -q "$llama/gguf-py"
  "$venv/bin/python" "$llama/convert_hf_to_gguf.py" "$model" --outtype bf16 --outfile "$gguf-bf16.gguf" >/dev/null
fi
quants="q8_0 q4_0"
[ "$sections" = depth ] && quants="q8_0"
for q in $quants; do
  if [ ! -f "$gguf-$q.gguf" ]; then
    # lm_head in 8 bits for both engines (deepseek-rs keeps it at q8_0 under q4_0).
    "$(dirname "$llama_bench")/llama-quantize" --output-tensor-type q8_0 "$gguf-bf16.gguf" "$gguf-$q.gguf" "${q^^}" >/dev/null 2>&1
  fi
done
sync

say "building deepseek-rs"
(cd "$root" && cargo build --release -q --example bench)
ours="$root/target/release/examples/bench"

say "memory bandwidth (read-only sum, 2 MiB pages)"
cat >"$work/bw.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <omp.h>
int main(void) {
  size_t n = (size_t)1 << 28; /* 2 GiB of doubles */
  double *a = aligned_alloc(1 << 21, n * sizeof(double));
  madvise(a, n * sizeof(double), MADV_HUGEPAGE);
  for (size_t i = 0; i < n; i++) a[i] = 1.0;
  double best = 0, s = 0;
  for (int r = 0; r < 5; r++) {
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    #pragma omp parallel for reduction(+ : s)
    for (size_t i = 0; i < n; i++) s += a[i];
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double gbs = n * sizeof(double) / ((t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec)) / 1e9;
    if (gbs > best) best = gbs;
  }
  printf("%.2f %g\n", best, s);
  return 0;
}
C
# -ffast-math lets the reduction vectorise: without it one add chain caps the probe below DRAM speed.
gcc -O3 -march=native -ffast-math -fopenmp "$work/bw.c" -o "$work/bw"
declare -A bw
for t in 1 2; do bw[$t]=$(OMP_NUM_THREADS=$t "$work/bw" | cut -d' ' -f1); echo "threads $t: ${bw[$t]} GB/s" >&2; done

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
llama_run() { # gguf threads -> "prefill decode"
  "$llama_bench" -m "$1" -t "$2" -p 128 -n 64 -r 1 -o json 2>/dev/null |
    "$venv/bin/python" -c 'import json,sys; r=json.load(sys.stdin); d={("p" if x["n_prompt"] else "g"): x["avg_ts"] for x in r}; print(d["p"], d["g"])'
}
ours_run() { # dtype threads -> "prefill decode bytes"
  "$ours" "$model" --dtype "$1" --threads "$2" --prompt 128 --gen 64 --reps 1 |
    sed -n 's/^RESULT prefill_tok_s=\([0-9.]*\) decode_tok_s=\([0-9.]*\) bytes_per_token=\([0-9]*\)/\1 \2 \3/p'
}

if [ "$sections" != depth ]; then
printf '\nmodel shape: %s\n' "$shape"
printf '\n| weights | threads | prefill ours | prefill llama.cpp | ratio | decode ours | decode llama.cpp | ratio | ours %% of ceiling | llama.cpp %% of ceiling |\n'
printf '|---|---|---|---|---|---|---|---|---|---|\n'
for q in q8_0 q4_0; do
  for t in 1 2; do
    : >"$work/o.txt"; : >"$work/l.txt"
    for ((i = 0; i < reps; i++)); do
      ours_run "$q" "$t" >>"$work/o.txt"
      llama_run "$gguf-$q.gguf" "$t" >>"$work/l.txt"
    done
    op=$(cut -d' ' -f1 "$work/o.txt" | median); od=$(cut -d' ' -f2 "$work/o.txt" | median)
    bytes=$(head -1 "$work/o.txt" | cut -d' ' -f3)
    lp=$(cut -d' ' -f1 "$work/l.txt" | median); ld=$(cut -d' ' -f2 "$work/l.txt" | median)
    awk -v q="$q" -v t="$t" -v op="$op" -v od="$od" -v lp="$lp" -v ld="$ld" -v b="$bytes" -v bw="${bw[$t]}" 'BEGIN {
      ceil = bw * 1e9 / b
      printf "| %s | %d | %.1f | %.1f | %.2fx | %.1f | %.1f | %.2fx | %.0f%% | %.0f%% |\n", q, t, op, lp, op / lp, od, ld, od / ld, 100 * od / ceil, 100 * ld / ceil
    }'
  done
done
echo
echo "Bytes per token are deepseek-rs's weights read per decoded token (lm_head q8_0 in both engines);"
echo "ceiling = read bandwidth at that thread count / those bytes. Medians of $reps interleaved runs."
fi

if [ "$sections" = depth ] || [ "$sections" = all ]; then
  depths="${DEPTHS:-0 4096 16384}"
  # tok/s of one llama-bench test (-p P -n N at depth D, cache type T), or nothing if it failed.
  llama_depth() { # gguf p n depth cachetype
    "$llama_bench" -m "$1" -t 2 -p "$2" -n "$3" -d "$4" -ctk "$5" -ctv "$5" -fa 1 -r 1 -o json 2>/dev/null |
      "$venv/bin/python" -c 'import json,sys; r=json.load(sys.stdin); print(r[0]["avg_ts"])' 2>/dev/null || true
  }
  ours_depth() { # gguf prompt gen depth cachetype -> "prefill decode measured_bytes_per_token"
    "$ours" "$1" --threads 2 --prompt "$2" --gen "$3" --depth "$4" --cache-dtype "$5" --reps 1 2>/dev/null |
      sed -n 's/^RESULT prefill_tok_s=\([0-9.]*\) decode_tok_s=\([0-9.]*\) .*cache_measured_bytes_per_token=\([0-9]*\).*/\1 \2 \3/p'
  }
  need() { # value what: stop the table when a peer crashed or printed nothing
    if [ -z "$1" ]; then echo "FAILED: $2 produced no result; no table without it" >&2; exit 1; fi
  }
  q8="$gguf-q8_0.gguf"
  printf '\nlong context, model shape %s, q8_0 weights (%s), 2 threads, medians of %s interleaved runs\n' "$shape" "$q8" "$reps"
  printf '\n| cache (ours / llama.cpp) | test | ours tok/s | llama.cpp tok/s | ratio | ours vs depth 0 | llama.cpp vs depth 0 | ours cache bytes/token (measured) |\n'
  printf '|---|---|---|---|---|---|---|---|\n'
  pp="${PREFILL-4096}"
  for pair in ${CACHE_PAIRS:-bf16/f16 q8_0/q8_0}; do
    oc=${pair%/*}; lc=${pair#*/}
    o0=""; l0=""
    for d in $depths; do
      : >"$work/o.txt"; : >"$work/l.txt"
      for ((i = 0; i < reps; i++)); do
        r=$(ours_depth "$q8" 0 32 "$d" "$oc"); need "$r" "deepseek-rs decode at depth $d ($oc)"; echo "$r" >>"$work/o.txt"
        r=$(llama_depth "$q8" 0 32 "$d" "$lc"); need "$r" "llama-bench -n 32 -d $d -ctk $lc"; echo "$r" >>"$work/l.txt"
      done
      say "decode at depth $d, $oc / $lc, samples: ours $(cut -d' ' -f2 "$work/o.txt" | tr '\n' ' ')llama.cpp $(tr '\n' ' ' <"$work/l.txt")"
      od=$(cut -d' ' -f2 "$work/o.txt" | median); ld=$(median <"$work/l.txt")
      mb=$(cut -d' ' -f3 "$work/o.txt" | median)
      [ -z "$o0" ] && { o0=$od; l0=$ld; }
      awk -v c="$oc / $lc" -v d="$d" -v od="$od" -v ld="$ld" -v o0="$o0" -v l0="$l0" -v mb="$mb" 'BEGIN {
        printf "| %s | tg32 @ d%d | %.1f | %.1f | %.2fx | %.2f | %.2f | %s |\n", c, d, od, ld, od / ld, od / o0, ld / l0, (d > 0 ? mb : "-")
      }'
    done
    [ -z "$pp" ] && continue
    : >"$work/o.txt"; : >"$work/l.txt"
    for ((i = 0; i < reps; i++)); do
      r=$(ours_depth "$q8" "$pp" 0 0 "$oc"); need "$r" "deepseek-rs prefill of $pp ($oc)"; echo "$r" >>"$work/o.txt"
      r=$(llama_depth "$q8" "$pp" 0 0 "$lc"); need "$r" "llama-bench -p $pp -ctk $lc"; echo "$r" >>"$work/l.txt"
    done
    say "prefill of $pp, $oc / $lc, samples: ours $(cut -d' ' -f1 "$work/o.txt" | tr '\n' ' ')llama.cpp $(tr '\n' ' ' <"$work/l.txt")"
    op=$(cut -d' ' -f1 "$work/o.txt" | median); lp=$(median <"$work/l.txt")
    awk -v c="$oc / $lc" -v pp="$pp" -v op="$op" -v lp="$lp" 'BEGIN {
      printf "| %s | pp%d | %.1f | %.1f | %.2fx | | | |\n", c, pp, op, lp, op / lp
    }'
  done
  echo
  echo "ratio = ours / llama.cpp; 'vs depth 0' = that engine's decode at this depth over its own at depth 0."
  echo "Measured bytes/token: resident anonymous memory the cache added while filling, over the tokens (bench.rs)."
fi
