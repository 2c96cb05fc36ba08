#!/usr/bin/env python3
"""Write a random bench model in Hugging Face layout, with a real tokenizer.

Run by hand (never by CI); the model is data, kept out of the repo:

    python3 tools/make_bench_model.py OUT_DIR [--shape deepseek-v3|qwen2-1.5b|r1-slice] [--tokenizer DIR]

`r1-slice` is DeepSeek-R1 at its true dimensions and in its checkpoint format (see R1_CONFIG and
write_r1_slice): 3 layers (one dense, two MoE) and 32 stored routed experts instead of 61 and
256, everything else as R1 (top-8 of 8 groups keeping 4, FP8 e4m3 with 128x128 float32
`weight_scale_inv` blocks, BF16 embeddings / norms / router / lm_head, float32 correction bias).
About 7.6 GB; the per-token work of each layer is R1's. Its config.json is committed as
deepseek-core/tests/fixtures/r1-slice/config.json (`--config-only`), where a test checks it
against R1's published values.

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

    SIZES = {"BF16": 2, "F32": 4, "F8_E4M3": 1}

    def write(self):
        header, offset = {}, 0
        for name, dtype, shape, _ in self.entries:
            size = int(np.prod(shape)) * self.SIZES[dtype]
            header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
            offset += size
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        with open(self.path, "wb") as f:
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            for name, dtype, shape, make in self.entries:
                a = make()
                if not isinstance(a, np.ndarray):  # already encoded, in row chunks
                    for part in a:
                        f.write(part.tobytes())
                elif dtype == "BF16":
                    f.write(bf16_bytes(a))
                else:
                    f.write(a.astype(np.float32).tobytes())


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


R1_CONFIG = {
    # DeepSeek-R1's config.json (deepseek-ai/DeepSeek-R1), minus `auto_map` (no remote code here),
    # with the slice's three changes marked.
    "architectures": ["DeepseekV3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "aux_loss_alpha": 0.001,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "ep_size": 1,
    "first_k_dense_replace": 1,  # slice: R1 has 3 dense layers of 61
    "hidden_act": "silu",
    "hidden_size": 7168,
    "initializer_range": 0.02,
    "intermediate_size": 18432,
    "kv_lora_rank": 512,
    "max_position_embeddings": 163840,
    "model_type": "deepseek_v3",
    "moe_intermediate_size": 2048,
    "moe_layer_freq": 1,
    "n_group": 8,
    "n_routed_experts": 32,  # slice: R1 stores 256 (top-8 of 8 groups keeping 4 either way)
    "n_shared_experts": 1,
    "norm_topk_prob": True,
    "num_attention_heads": 128,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 3,  # slice: R1 has 61
    "num_key_value_heads": 128,
    "num_nextn_predict_layers": 0,  # slice: the MTP layer is not stored (R1: 1)
    "pretraining_tp": 1,
    "q_lora_rank": 1536,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "quantization_config": {
        "activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
        "weight_block_size": [128, 128],
    },
    "rms_norm_eps": 1e-06,
    "rope_scaling": {
        "beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0,
        "original_max_position_embeddings": 4096, "type": "yarn",
    },
    "rope_theta": 10000,
    "routed_scaling_factor": 2.5,
    "scoring_func": "sigmoid",
    "seq_aux": True,
    "tie_word_embeddings": False,
    "topk_method": "noaux_tc",
    "topk_group": 4,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.46.3",
    "use_cache": True,
    "v_head_dim": 128,
    "vocab_size": 129280,
}


def fp8_e4m3_values():
    """The float value of each of the 256 e4m3fn codes (NaN for 0x7F / 0xFF)."""
    v = np.empty(256, dtype=np.float64)
    for b in range(256):
        e, m = (b >> 3) & 0xF, b & 7
        mag = m / 8 * 2.0 ** -6 if e == 0 else (1 + m / 8) * 2.0 ** (e - 7)
        v[b] = np.nan if b & 0x7F == 0x7F else (-mag if b & 0x80 else mag)
    return v


def write_r1_slice(args, rng):
    """R1's tensors at R1's shapes and dtypes. FP8 matrices are drawn as the real checkpoint was
    made: a N(0, 1/fan_in) weight, scaled per 128x128 block so that its largest value maps near
    448, rounded to e4m3. To write ~7 GB in minutes, codes come from a 65536-entry table of
    rounded normal quantiles indexed by random u16s (BF16 matrices likewise)."""
    c = R1_CONFIG
    H, nh, E = c["hidden_size"], c["num_attention_heads"], c["n_routed_experts"]
    qk = c["qk_nope_head_dim"] + c["qk_rope_head_dim"]
    B = c["quantization_config"]["weight_block_size"][0]
    z = np.sort(rng.standard_normal(65536))
    vals = fp8_e4m3_values()
    finite = np.flatnonzero(~np.isnan(vals))
    order = finite[np.argsort(vals[finite], kind="stable")]
    sorted_vals = vals[order]
    # A 16384-weight block's largest |value| is about 4 sigma; map it near 448.
    target = np.clip(z * (448 / 4.0), -448, 448)
    hi = np.clip(np.searchsorted(sorted_vals, target), 1, len(sorted_vals) - 1)
    pick = np.where(target - sorted_vals[hi - 1] <= sorted_vals[hi] - target, hi - 1, hi)
    fp8_table = order[pick].astype(np.uint8)
    bf16_table = np.frombuffer(bf16_bytes(z.astype(np.float32)), dtype=np.uint16)
    ROWS = 1024

    def codes(table, rows, cols):
        def gen():
            for r in range(0, rows, ROWS):
                n = min(ROWS, rows - r)
                yield table[rng.integers(0, 65536, size=(n, cols), dtype=np.uint16)]
        return gen

    def bf16(rows, cols, std):
        t = np.frombuffer(bf16_bytes(z.astype(np.float32) * std), dtype=np.uint16)
        return codes(t, rows, cols)

    def norm(n):
        return lambda: 1.0 + 0.05 * rng.standard_normal(n, dtype=np.float32)

    w = Writer(os.path.join(args.out, "model.safetensors"))

    def fp8(name, rows, cols):
        w.add(name, (rows, cols), dtype="F8_E4M3", make=codes(fp8_table, rows, cols))
        sr, sc = -(-rows // B), -(-cols // B)
        base = (4.0 / 448) / np.sqrt(cols)
        w.add(name + "_scale_inv", (sr, sc), dtype="F32",
              make=lambda: base * (1 + 0.1 * rng.random((sr, sc), dtype=np.float32)))

    def mlp(prefix, inter):
        fp8(f"{prefix}.gate_proj.weight", inter, H)
        fp8(f"{prefix}.up_proj.weight", inter, H)
        fp8(f"{prefix}.down_proj.weight", H, inter)

    w.add("model.embed_tokens.weight", (c["vocab_size"], H), make=bf16(c["vocab_size"], H, 1.0))
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}"
        a = f"{p}.self_attn"
        w.add(f"{p}.input_layernorm.weight", (H,), make=norm(H))
        w.add(f"{p}.post_attention_layernorm.weight", (H,), make=norm(H))
        fp8(f"{a}.q_a_proj.weight", c["q_lora_rank"], H)
        w.add(f"{a}.q_a_layernorm.weight", (c["q_lora_rank"],), make=norm(c["q_lora_rank"]))
        fp8(f"{a}.q_b_proj.weight", nh * qk, c["q_lora_rank"])
        fp8(f"{a}.kv_a_proj_with_mqa.weight", c["kv_lora_rank"] + c["qk_rope_head_dim"], H)
        w.add(f"{a}.kv_a_layernorm.weight", (c["kv_lora_rank"],), make=norm(c["kv_lora_rank"]))
        fp8(f"{a}.kv_b_proj.weight", nh * (c["qk_nope_head_dim"] + c["v_head_dim"]), c["kv_lora_rank"])
        fp8(f"{a}.o_proj.weight", H, nh * c["v_head_dim"])
        if l < c["first_k_dense_replace"]:
            mlp(f"{p}.mlp", c["intermediate_size"])
        else:
            w.add(f"{p}.mlp.gate.weight", (E, H), make=bf16(E, H, 1 / np.sqrt(H)))
            w.add(f"{p}.mlp.gate.e_score_correction_bias", (E,), dtype="F32",
                  make=lambda: 0.01 * rng.standard_normal(E, dtype=np.float32))
            for e in range(E):
                mlp(f"{p}.mlp.experts.{e}", c["moe_intermediate_size"])
            mlp(f"{p}.mlp.shared_experts", c["moe_intermediate_size"] * c["n_shared_experts"])
    w.add("model.norm.weight", (H,), make=norm(H))
    w.add("lm_head.weight", (c["vocab_size"], H), make=bf16(c["vocab_size"], H, 1 / np.sqrt(H)))
    w.write()
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(c, f, indent=2)
    with open(os.path.join(args.out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 0, "eos_token_id": 1, "do_sample": True, "temperature": 0.6, "top_p": 0.95}, f, indent=2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--shape", choices=["deepseek-v3", "qwen2-1.5b", "r1-slice"], default="deepseek-v3")
    ap.add_argument("--tokenizer", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config-only", action="store_true",
                    help="write config.json only (the r1-slice one is a test fixture)")
    args = ap.parse_args()
    if args.tokenizer is None:
        name = "deepseek-r1-distill-qwen-7b" if args.shape == "qwen2-1.5b" else "deepseek-r1"
        args.tokenizer = f"deepseek-core/tests/fixtures/tokenizers/{name}"
    os.makedirs(args.out, exist_ok=True)
    if args.config_only:
        c = {"deepseek-v3": CONFIG, "qwen2-1.5b": QWEN2_CONFIG, "r1-slice": R1_CONFIG}[args.shape]
        with open(os.path.join(args.out, "config.json"), "w") as f:
            json.dump(c, f, indent=2)
        return
    rng = np.random.default_rng(args.seed)
    if args.shape == "qwen2-1.5b":
        write_qwen2(args, rng)
        copy_tokenizer(args)
        return
    if args.shape == "r1-slice":
        write_r1_slice(args, rng)
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
