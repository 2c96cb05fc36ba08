#!/usr/bin/env python3
"""llama.cpp runs the GGUF files our converter writes (run by hand; needs llama-cpp-python).

    cargo build --example convert
    LLAMA_CPP_LIB_PATH=/work/ref/llama-build/bin python3 tools/check_gguf_with_llama_cpp.py

Converts `v3_r1tok` (a tiny random DeepSeek-V3 with R1's real vocabulary) with R1's tokenizer
by `examples/convert.rs`, loads the file in llama.cpp (llama-cpp-python), and checks that
llama.cpp tokenizes the chat prompt to transformers' ids and continues it greedily with
transformers' 16 tokens (`v3_r1tok/golden.json`). Optionally (`--bench DIR`) converts a bench
model folder at q8_0 and q4_0 and checks llama.cpp loads and decodes each. Exits non-zero on
any mismatch. The tensors and metadata themselves are compared with llama.cpp's converter in
`deepseek-core/tests/gguf_llama_cpp.rs` (`our_writer_matches_the_converter`).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from llama_cpp import Llama

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "deepseek-core/tests/fixtures")
CONVERT = os.path.join(ROOT, "target/debug/examples/convert")


def convert(src, dst, *extra):
    subprocess.run([CONVERT, src, dst, *extra], check=True)


def greedy(llm, ids, n):
    llm.reset()
    llm.eval(ids)
    out = []
    for _ in range(n):
        t = int(np.argmax(llm.eval_logits[-1]))
        out.append(t)
        llm.eval([t])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", help="a bench model folder (tools/make_bench_model.py)")
    args = ap.parse_args()
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        g = json.load(open(os.path.join(FIX, "v3_r1tok/golden.json")))
        path = os.path.join(tmp, "r1tok.gguf")
        convert(os.path.join(FIX, "v3_r1tok"), path, "--tokenizer", os.path.join(FIX, "tokenizers/deepseek-r1"))
        llm = Llama(model_path=path, n_ctx=128, logits_all=True, verbose=False, type_k=0, type_v=0, n_threads=2)
        ids = llm.tokenize(g["prompt"].encode(), add_bos=False, special=True)
        out = greedy(llm, ids, len(g["greedy_ids"]))
        print(f"v3_r1tok: prompt ids equal {ids == g['input_ids']}, greedy equal {out == g['greedy_ids']}")
        ok &= ids == g["input_ids"] and out == g["greedy_ids"]
        if args.bench:
            for q in ["q8_0", "q4_0"]:
                path = os.path.join(tmp, f"bench-{q}.gguf")
                convert(args.bench, path, "--dtype", q)
                llm = Llama(model_path=path, n_ctx=256, verbose=False, n_threads=2)
                toks = greedy(llm, llm.tokenize(b"Hello", add_bos=True), 8)
                print(f"bench {q}: llama.cpp loaded our file and decoded {toks}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
