#!/usr/bin/env python3
"""Write a random bench model in Hugging Face layout, with a real tokenizer.

Run by hand (never by CI); the model is data, kept out of the repo:

    python3 tools/make_bench_model.py OUT_DIR [--shape deepseek-v3|qwen2-1.5b] [--tokenizer DIR]

`qwen2-1.5b` is shaped like DeepSeek-R1-Distill-Qwen-1.5B (hidden 1536, 28 layers, 12 heads /
2 KV heads of 128, intermediate 8960, vocab 151936, q/k/v biases; ~1.78 B parameters, 3.6 GB in
BF16) and takes the R1-Distill-Qwen tokenizer (default: the committed fixture).

The default shape, `deepseek-v3`:
Shape (DeepSeek-V3/R1 structure at 1/7 the width): hidden 1024, 12 layers (first dense), MLA with
q_lora 384 / kv_lora 256, 16 heads (nope 64, rope 32, v 64), 64 routed experts (top 6, 8 groups
keep 4, noaux_tc sigmoid) of width 384 + 1 shared, vocab 129280 (R1's). About 1.15 B parameters,
~0.27 B read per decoded token. Needs only numpy (no torch): weights are N(0, 1/sqrt(fan_in)).
The real R1 tokenizer lets llama.cpp's convert_hf_to_gguf.py recognise the pre-tokenizer.
"""
import argparse
import json
import os
import shutil
import struct

import numpy as np

CONFIG = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "vocab_size": 129280,
    "hidden_size": 1024,
    "intermediate_size": 2816,
    "moe_intermediate_size": 384,
    "num_hidden_layers": 12,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
    "q_lora_rank": 384,
    "kv_lora_rank": 256,
    "qk_nope_head_dim": 64,
    "qk_rope_head_dim": 32,
    "v_head_dim": 64,
    "n_routed_experts": 64,
    "n_shared_experts": 1,
    "num_experts_per_tok": 6,
    "n_group": 8,
    "topk_group": 4,
    "topk_method": "noaux_tc",
    "scoring_func": "sigmoid",
    "norm_topk_prob": True,
    "routed_scaling_factor": 2.5,
    "first_k_dense_replace": 1,
    "moe_layer_freq": 1,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000,
    "rope_scaling": {
        "type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
        "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0,
    },
    "max_position_embeddings": 163840,
    "tie_word_embeddings": False,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "hidden_act": "silu",
    "attention_bias": False,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "num_nextn_predict_layers": 0,
    "ep_size": 1,
    "torch_dtype": "bfloat16",
    "use_cache": True,
}


def bf16_bytes(a):
    """float32 array -> bfloat16 bytes (round to nearest even)."""
    u = a.astype(np.float32).view(np.uint32)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16).tobytes()


class Writer:
    """Streams tensors into one safetensors file without holding them all in memory."""

    def __init__(self, path):
        self.path = path
        self.entries = []  # (name, dtype, shape, generator)

    def add(self, name, shape, dtype="BF16", make=None):
        self.entries.append((name, dtype, shape, make))

    def write(self):
        header, offset = {}, 0
        for name, dtype, shape, _ in self.entries:
            size = int(np.prod(shape)) * (2 if dtype == "BF16" else 4)
            header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
            offset += size
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        with open(self.path, "wb") as f:
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            for name, dtype, shape, make in self.entries:
                a = make()
                f.write(bf16_bytes(a) if dtype == "BF16" else a.astype(np.float32).tobytes())


QWEN2_CONFIG = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "vocab_size": 151936,
    "hidden_size": 1536,
    "intermediate_size": 8960,
    "num_hidden_layers": 28,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000,
    "tie_word_embeddings": False,
    "use_sliding_window": False,
    "sliding_window": 4096,
    "max_window_layers": 21,
    "bos_token_id": 151646,
    "eos_token_id": 151643,
    "hidden_act": "silu",
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "torch_dtype": "bfloat16",
    "use_cache": True,
}


def write_qwen2(args, rng):
    c = QWEN2_CONFIG
    H, nh, nkv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    hd = H // nh

    def lin(rows, cols):
        return lambda: rng.standard_normal((rows, cols), dtype=np.float32) / np.sqrt(cols)

    def vec(n, scale=0.02, base=0.0):
        return lambda: base + scale * rng.standard_normal(n, dtype=np.float32)

    w = Writer(os.path.join(args.out, "model.safetensors"))
    w.add("model.embed_tokens.weight", (c["vocab_size"], H), make=lambda: rng.standard_normal((c["vocab_size"], H), dtype=np.float32))
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}"
        w.add(f"{p}.input_layernorm.weight", (H,), make=vec(H, 0.05, 1.0))
        w.add(f"{p}.post_attention_layernorm.weight", (H,), make=vec(H, 0.05, 1.0))
        for name, rows in (("q_proj", nh * hd), ("k_proj", nkv * hd), ("v_proj", nkv * hd)):
            w.add(f"{p}.self_attn.{name}.weight", (rows, H), make=lin(rows, H))
            w.add(f"{p}.self_attn.{name}.bias", (rows,), make=vec(rows))
        w.add(f"{p}.self_attn.o_proj.weight", (H, nh * hd), make=lin(H, nh * hd))
        I = c["intermediate_size"]
        w.add(f"{p}.mlp.gate_proj.weight", (I, H), make=lin(I, H))
        w.add(f"{p}.mlp.up_proj.weight", (I, H), make=lin(I, H))
        w.add(f"{p}.mlp.down_proj.weight", (H, I), make=lin(H, I))
    w.add("model.norm.weight", (H,), make=vec(H, 0.05, 1.0))
    w.add("lm_head.weight", (c["vocab_size"], H), make=lin(c["vocab_size"], H))
    w.write()
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(c, f, indent=2)
    with open(os.path.join(args.out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 151646, "eos_token_id": 151643, "do_sample": True, "temperature": 0.6, "top_p": 0.95}, f, indent=2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--shape", choices=["deepseek-v3", "qwen2-1.5b"], default="deepseek-v3")
    ap.add_argument("--tokenizer", default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.tokenizer is None:
        name = "deepseek-r1" if args.shape == "deepseek-v3" else "deepseek-r1-distill-qwen-7b"
        args.tokenizer = f"deepseek-core/tests/fixtures/tokenizers/{name}"
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    if args.shape == "qwen2-1.5b":
        write_qwen2(args, rng)
        copy_tokenizer(args)
        return
    c = CONFIG
    H, nh = c["hidden_size"], c["num_attention_heads"]
    qk = c["qk_nope_head_dim"] + c["qk_rope_head_dim"]

    def lin(rows, cols):
        return lambda: rng.standard_normal((rows, cols), dtype=np.float32) / np.sqrt(cols)

    def norm(n):
        return lambda: 1.0 + 0.05 * rng.standard_normal(n, dtype=np.float32)

    w = Writer(os.path.join(args.out, "model.safetensors"))
    w.add("model.embed_tokens.weight", (c["vocab_size"], H), make=lambda: rng.standard_normal((c["vocab_size"], H), dtype=np.float32))
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}"
        a = f"{p}.self_attn"
        w.add(f"{p}.input_layernorm.weight", (H,), make=norm(H))
        w.add(f"{p}.post_attention_layernorm.weight", (H,), make=norm(H))
        w.add(f"{a}.q_a_proj.weight", (c["q_lora_rank"], H), make=lin(c["q_lora_rank"], H))
        w.add(f"{a}.q_a_layernorm.weight", (c["q_lora_rank"],), make=norm(c["q_lora_rank"]))
        w.add(f"{a}.q_b_proj.weight", (nh * qk, c["q_lora_rank"]), make=lin(nh * qk, c["q_lora_rank"]))
        kv_a = c["kv_lora_rank"] + c["qk_rope_head_dim"]
        w.add(f"{a}.kv_a_proj_with_mqa.weight", (kv_a, H), make=lin(kv_a, H))
        w.add(f"{a}.kv_a_layernorm.weight", (c["kv_lora_rank"],), make=norm(c["kv_lora_rank"]))
        kv_b = nh * (c["qk_nope_head_dim"] + c["v_head_dim"])
        w.add(f"{a}.kv_b_proj.weight", (kv_b, c["kv_lora_rank"]), make=lin(kv_b, c["kv_lora_rank"]))
        w.add(f"{a}.o_proj.weight", (H, nh * c["v_head_dim"]), make=lin(H, nh * c["v_head_dim"]))

        def mlp(prefix, inter):
            w.add(f"{prefix}.gate_proj.weight", (inter, H), make=lin(inter, H))
            w.add(f"{prefix}.up_proj.weight", (inter, H), make=lin(inter, H))
            w.add(f"{prefix}.down_proj.weight", (H, inter), make=lin(H, inter))

        if l < c["first_k_dense_replace"]:
            mlp(f"{p}.mlp", c["intermediate_size"])
        else:
            E = c["n_routed_experts"]
            w.add(f"{p}.mlp.gate.weight", (E, H), make=lin(E, H))
            w.add(f"{p}.mlp.gate.e_score_correction_bias", (E,), dtype="F32",
                  make=lambda: 0.01 * rng.standard_normal(E, dtype=np.float32))
            for e in range(E):
                mlp(f"{p}.mlp.experts.{e}", c["moe_intermediate_size"])
            mlp(f"{p}.mlp.shared_experts", c["moe_intermediate_size"] * c["n_shared_experts"])
    w.add("model.norm.weight", (H,), make=norm(H))
    w.add("lm_head.weight", (c["vocab_size"], H), make=lin(c["vocab_size"], H))
    w.write()

    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
    with open(os.path.join(args.out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 0, "eos_token_id": 1, "do_sample": True, "temperature": 0.6, "top_p": 0.95}, f, indent=2)
    copy_tokenizer(args)


def copy_tokenizer(args):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        src = os.path.join(args.tokenizer, name)
        if os.path.exists(src):
            shutil.copy(src, os.path.join(args.out, name))
        else:
            print(f"warning: {src} not found; llama.cpp's converter needs the real tokenizer")
    print(f"wrote {args.out}: {os.path.getsize(os.path.join(args.out, 'model.safetensors')) / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
