"""Loads a checkpoint folder, evaluates token ids and prints the greedy continuation.

    python examples/python/logits.py <model-dir> [ids...] [--new N] [--threads T]

Needs the module: `pip install ./deepseek-py`. The Python twin of examples/logits.rs.
"""

import argparse
import sys
import time

import numpy as np

import deepseek_rs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="Hugging Face checkpoint folder (config.json + safetensors)")
    p.add_argument("ids", nargs="*", type=int, help="prompt token ids (default: bos)")
    p.add_argument("--new", type=int, default=16, help="tokens to generate (default 16)")
    p.add_argument("--threads", type=int, default=None, help="worker threads (default: all)")
    args = p.parse_args()

    t0 = time.perf_counter()
    try:
        model = deepseek_rs.Model(args.model, threads=args.threads)
    except (deepseek_rs.DeepseekError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    c = model.config
    print(
        f"{c['model_type']}: {c['num_hidden_layers']} layers, hidden {c['hidden_size']}, "
        f"vocab {model.vocab_size}, loaded in {time.perf_counter() - t0:.2f}s"
    )
    ids = args.ids or [c["bos_token_id"] if c["bos_token_id"] is not None else 0]

    session = model.new_session()
    t1 = time.perf_counter()
    try:
        logits = session.eval(ids)  # prefill: appends the prompt to the cache
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    prefill = time.perf_counter() - t1
    t2 = time.perf_counter()
    out: list[int] = []
    while len(out) < args.new:
        out.append(int(np.argmax(logits)))
        if len(out) < args.new:
            logits = session.eval([out[-1]])  # decode: one token at a time
    decode = time.perf_counter() - t2
    steps = max(len(out) - 1, 0)
    print(f"prompt {ids}")
    print(f"greedy {out}")
    print(
        f"prefill {len(ids)} tokens in {prefill:.3f}s, decode {steps} tokens in {decode:.3f}s "
        f"({steps / max(decode, 1e-9):.1f} tok/s), cache {session.cache_bytes_per_token} bytes/token"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
