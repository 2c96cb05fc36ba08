#!/usr/bin/env python3
"""Writes the fuzz crate's fixed inputs and seed corpora (run by hand; the output is committed).

  python3 tools/make_fuzz_seeds.py

- fuzz/fixtures/tiny_qwen2, fuzz/fixtures/tiny_v3: a config.json and a model.safetensors of a
  few kilobytes each, loadable by Model::load, so the safetensors and config targets start from
  inputs that reach the model builder and a forward pass (the repository's fixtures are 100x
  larger, which slows every libFuzzer execution). Values are arbitrary: nothing checks logits.
- fuzz/corpus/<target>/: small seeds from the repository's fixtures (configs, tokenizer
  configs, chat templates, tokenizer.json, generation configs, test strings).
- fuzz/dict/*.dict: libFuzzer dictionaries (JSON keys of the configs, Jinja syntax, safetensors
  header words).

Pure Python (no numpy/torch), deterministic.
"""

import hashlib
import json
import random
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FUZZ = ROOT / "fuzz"
FIX = ROOT / "deepseek-core" / "tests" / "fixtures"
TOK = FIX / "tokenizers"
NANO = ROOT / "models" / "r1-nano"


def write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)


def seed(target: str, data) -> None:
    """A seed named by its content hash, as libFuzzer names corpus files."""
    if isinstance(data, str):
        data = data.encode()
    write(FUZZ / "corpus" / target / hashlib.sha1(data).hexdigest(), data)


# --- safetensors ---------------------------------------------------------------------------------


def encode(dtype: str, values, rng: random.Random) -> bytes:
    if dtype == "F32":
        return b"".join(struct.pack("<f", v) for v in values)
    if dtype == "F16":
        return b"".join(struct.pack("<e", v) for v in values)
    if dtype == "BF16":
        return b"".join(struct.pack("<f", v)[2:] for v in values)
    if dtype == "F8_E4M3":
        # Any byte but the NaN patterns (S.1111.111); & 0xb7 also keeps magnitudes small.
        return bytes(rng.randrange(256) & 0xB7 for _ in values)
    raise ValueError(dtype)


def safetensors(tensors) -> bytes:
    """tensors: [(name, dtype, shape, raw bytes)] -> a .safetensors file."""
    header, data = {"__metadata__": {"format": "pt"}}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def make_model(shapes, dtype_of, seed_value: int, block=None) -> bytes:
    """shapes: {name: shape}; dtype_of(name) -> dtype; F8 matrices get `_scale_inv` blocks."""
    rng = random.Random(seed_value)
    out = []
    for name, shape in shapes.items():
        dtype = dtype_of(name, shape)
        n = 1
        for d in shape:
            n *= d
        if name.endswith("layernorm.weight") or name.endswith("norm.weight"):
            values = [1.0 + rng.uniform(-0.1, 0.1) for _ in range(n)]
        else:
            values = [rng.uniform(-0.5, 0.5) for _ in range(n)]
        out.append((name, dtype, shape, encode(dtype, values, rng)))
        if dtype == "F8_E4M3":
            rows, cols = shape
            sshape = [-(-rows // block[0]), -(-cols // block[1])]
            scales = [rng.uniform(0.01, 0.05) for _ in range(sshape[0] * sshape[1])]
            out.append((name + "_scale_inv", "F32", sshape, encode("F32", scales, rng)))
    return safetensors(out)


QWEN2 = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 8,
    "intermediate_size": 16,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "num_hidden_layers": 1,
    "vocab_size": 16,
    "max_position_embeddings": 64,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "tie_word_embeddings": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "torch_dtype": "float16",
}


def qwen2_shapes(c):
    h, i, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    hd = h // c["num_attention_heads"]
    kv = c["num_key_value_heads"] * hd
    s = {"model.embed_tokens.weight": [v, h]}
    for layer in range(c["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        s.update({
            p + "input_layernorm.weight": [h],
            p + "self_attn.q_proj.weight": [h, h],
            p + "self_attn.q_proj.bias": [h],
            p + "self_attn.k_proj.weight": [kv, h],
            p + "self_attn.k_proj.bias": [kv],
            p + "self_attn.v_proj.weight": [kv, h],
            p + "self_attn.v_proj.bias": [kv],
            p + "self_attn.o_proj.weight": [h, h],
            p + "post_attention_layernorm.weight": [h],
            p + "mlp.gate_proj.weight": [i, h],
            p + "mlp.up_proj.weight": [i, h],
            p + "mlp.down_proj.weight": [h, i],
        })
    s["model.norm.weight"] = [h]
    return s


V3 = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "hidden_size": 16,
    "intermediate_size": 16,
    "moe_intermediate_size": 8,
    "num_hidden_layers": 2,
    "first_k_dense_replace": 1,
    "moe_layer_freq": 1,
    "n_routed_experts": 4,
    "n_shared_experts": 1,
    "num_experts_per_tok": 2,
    "n_group": 2,
    "topk_group": 1,
    "topk_method": "noaux_tc",
    "scoring_func": "sigmoid",
    "norm_topk_prob": True,
    "routed_scaling_factor": 2.5,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "q_lora_rank": 8,
    "kv_lora_rank": 8,
    "qk_nope_head_dim": 4,
    "qk_rope_head_dim": 4,
    "v_head_dim": 4,
    "vocab_size": 16,
    "max_position_embeddings": 64,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "rope_scaling": {
        "type": "yarn",
        "factor": 4.0,
        "original_max_position_embeddings": 16,
        "beta_fast": 32.0,
        "beta_slow": 1.0,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
    },
    "quantization_config": {
        "quant_method": "fp8",
        "fmt": "e4m3",
        "activation_scheme": "dynamic",
        "weight_block_size": [8, 8],
    },
    "num_nextn_predict_layers": 0,
    "tie_word_embeddings": False,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "torch_dtype": "bfloat16",
}


def v3_shapes(c):
    h, v = c["hidden_size"], c["vocab_size"]
    heads, ql, kl = c["num_attention_heads"], c["q_lora_rank"], c["kv_lora_rank"]
    nope, rope, vd = c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"]
    s = {"model.embed_tokens.weight": [v, h]}

    def mlp(prefix, inter):
        s.update({
            prefix + "gate_proj.weight": [inter, h],
            prefix + "up_proj.weight": [inter, h],
            prefix + "down_proj.weight": [h, inter],
        })

    for layer in range(c["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        s.update({
            p + "input_layernorm.weight": [h],
            p + "self_attn.q_a_proj.weight": [ql, h],
            p + "self_attn.q_a_layernorm.weight": [ql],
            p + "self_attn.q_b_proj.weight": [heads * (nope + rope), ql],
            p + "self_attn.kv_a_proj_with_mqa.weight": [kl + rope, h],
            p + "self_attn.kv_a_layernorm.weight": [kl],
            p + "self_attn.kv_b_proj.weight": [heads * (nope + vd), kl],
            p + "self_attn.o_proj.weight": [h, heads * vd],
            p + "post_attention_layernorm.weight": [h],
        })
        if layer < c["first_k_dense_replace"]:
            mlp(p + "mlp.", c["intermediate_size"])
        else:
            e, mi = c["n_routed_experts"], c["moe_intermediate_size"]
            s[p + "mlp.gate.weight"] = [e, h]
            s[p + "mlp.gate.e_score_correction_bias"] = [e]
            for x in range(e):
                mlp(p + f"mlp.experts.{x}.", mi)
            mlp(p + "mlp.shared_experts.", mi * c["n_shared_experts"])
    s["model.norm.weight"] = [h]
    s["lm_head.weight"] = [v, h]
    return s


def dump(config) -> str:
    return json.dumps(config, indent=2) + "\n"


def fixtures():
    qwen = make_model(qwen2_shapes(QWEN2), lambda n, s: "F16", 1)
    write(FUZZ / "fixtures" / "tiny_qwen2" / "config.json", dump(QWEN2))
    write(FUZZ / "fixtures" / "tiny_qwen2" / "model.safetensors", qwen)
    plain = make_model(v3_shapes(V3), lambda n, s: "BF16" if n != "model.layers.1.mlp.gate.e_score_correction_bias" else "F32", 2)
    write(FUZZ / "fixtures" / "tiny_v3" / "config.json", dump(V3))
    write(FUZZ / "fixtures" / "tiny_v3" / "model.safetensors", plain)

    def fp8(name, shape):
        # DeepSeek-V3's checkpoint: the projections in F8 with block scales, the rest BF16.
        if len(shape) == 2 and "proj" in name:
            return "F8_E4M3"
        return "F32" if name.endswith("e_score_correction_bias") else "BF16"

    quant = make_model(v3_shapes(V3), fp8, 3, block=V3["quantization_config"]["weight_block_size"])
    seed("safetensors", qwen)
    seed("safetensors", plain)
    seed("safetensors", quant)
    seed("safetensors", safetensors([]))
    rng = random.Random(4)
    seed("safetensors", safetensors([
        ("a", "F32", [2, 2], encode("F32", [1, 2, 3, 4], rng)),
        ("b", "F16", [3], encode("F16", [1, 2, 3], rng)),
        ("c", "BF16", [], encode("BF16", [7], rng)),
        ("d", "F8_E4M3", [4], encode("F8_E4M3", [0] * 4, rng)),
        ("e", "I64", [1], struct.pack("<q", 5)),
        ("f", "F32", [0, 3], b""),
    ]))


# --- the other targets ---------------------------------------------------------------------------


def configs():
    paths = sorted(FIX.glob("*/config.json")) + [NANO / "config.json"]
    paths += [FUZZ / "fixtures" / "tiny_qwen2" / "config.json", FUZZ / "fixtures" / "tiny_v3" / "config.json"]
    for p in paths:
        seed("config_json", p.read_bytes())


def index():
    seed("safetensors_index", (FIX / "llama3_sharded_bf16" / "model.safetensors.index.json").read_bytes())
    seed("safetensors_index", json.dumps({"metadata": {}, "weight_map": {"x": "model-00001-of-00002.safetensors"}}))


TOKENIZER_DIRS = [NANO, TOK / "deepseek-r1", TOK / "deepseek-r1-distill-llama-8b", TOK / "deepseek-r1-distill-qwen-7b"]

# Conversations for the template seeds: the roles and shapes R1's template branches on.
CONVERSATIONS = [
    [("user", "hi")],
    [("system", "Be brief."), ("user", "What is 1+1?"), ("assistant", "<think>\nadd\n</think>\n\n2"), ("user", "And 2+2?")],
    [("system", "a"), ("system", "b"), ("user", "call a tool"), ("tool", "42"), ("tool", "43")],
    [("assistant", "no user first"), ("user", "{{ not a template }}")],
]


def template_seed(source: str, conversation, add_generation_prompt: bool) -> bytes:
    """The chat_template target's input: flag byte, source, then NUL-separated role/content."""
    parts = [source]
    for role, content in conversation:
        parts += [role, content]
    return bytes([1 if add_generation_prompt else 0]) + "\0".join(parts).encode()


def tokenizer_inputs():
    sources = []
    for d in TOKENIZER_DIRS:
        cfg = (d / "tokenizer_config.json").read_bytes()
        seed("tokenizer_config", cfg)
        sources.append(json.loads(cfg)["chat_template"])
    for i, source in enumerate(dict.fromkeys(sources)):
        for j, conversation in enumerate(CONVERSATIONS):
            seed("chat_template", template_seed(source, conversation, (i + j) % 2 == 0))
    seed("chat_template", template_seed("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}", CONVERSATIONS[1], True))
    seed("chat_template", template_seed("{{ raise_exception('no') }}", CONVERSATIONS[0], True))
    seed("tokenizer_config", json.dumps({"bos_token": {"content": "<｜begin▁of▁sentence｜>"}, "add_bos_token": True,
                                         "chat_template": [{"name": "default", "template": "{{ messages[0].content }}"}]}))

    seed("tokenizer_json", (NANO / "tokenizer.json").read_bytes())
    # A word-level tokenizer: the other model kind, no byte-level decoder.
    seed("tokenizer_json", json.dumps({
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": 0, "content": "<s>", "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True}],
        "normalizer": None, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None, "decoder": None,
        "model": {"type": "WordLevel", "vocab": {"<s>": 0, "hello": 1, "world": 2, "[UNK]": 3}, "unk_token": "[UNK]"},
    }))

    strings = json.loads((TOK / "corpus.json").read_text())["strings"]
    strings += ["<｜User｜>What is 4738 + 256?<｜Assistant｜><think>\n", "</think>\n\n4994<｜end▁of▁sentence｜>", "\ufffd\x00\x01"]
    for s in strings:
        seed("tokenizer_text", s)


def generation():
    paths = sorted(FIX.glob("*/generation_config.json")) + [NANO / "generation_config.json"]
    logits = struct.pack("<16f", *[0.5 * i - 3 for i in range(16)])
    for p in paths:
        seed("generation_config", p.read_bytes() + b"\0" + logits)
    seed("generation_config", json.dumps({"do_sample": True, "temperature": 0.7, "top_k": 3, "top_p": 0.9, "min_p": 0.05,
                                          "repetition_penalty": 1.1, "eos_token_id": [1, 2], "max_new_tokens": 8}).encode() + b"\0" + logits)
    seed("generation_config", b"{}\0" + struct.pack("<4f", float("nan"), float("inf"), float("-inf"), 0.0))


def capi():
    # The capi target reads its bytes as a program of calls (fuzz/src/c_api.rs): one seed per op.
    # Context length byte, attention byte, then the op and its arguments.
    for op in range(13):
        seed("capi", bytes([64, op % 3, op]) + b"What is 1+1?\0user\0hi\0" + bytes(range(32)))


def dict_line(word: str) -> str:
    """One libFuzzer dictionary entry: a quoted string, escaping quotes, backslashes and non-ASCII bytes."""
    out = []
    for b in word.encode():
        if b in (0x22, 0x5C):
            out.append("\\" + chr(b))
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append(f"\\x{b:02x}")
    return '"' + "".join(out) + '"\n'


def dictionaries():
    keys = set()
    for p in sorted(FIX.glob("*/config.json")) + [NANO / "config.json"]:
        def walk(v):
            if isinstance(v, dict):
                for k, x in v.items():
                    keys.add(k)
                    walk(x)
        walk(json.loads(p.read_text()))
    words = sorted(f'"{k}"' for k in keys) + ['"deepseek_v3"', '"deepseek_v2"', '"qwen2"', '"qwen3"', '"llama"', '"yarn"',
                                             '"llama3"', '"linear"', '"dynamic"', '"noaux_tc"', '"group_limited_greedy"',
                                             '"greedy"', '"softmax"', '"sigmoid"', '"fp8"', '"e4m3"', "null", "true", "false",
                                             "1e308", "-1", "4294967296", "18446744073709551616", "0.0"]
    write(FUZZ / "dict" / "json.dict", "".join(map(dict_line, words)))
    jinja = ["{%", "%}", "{{", "}}", "{#", "#}", "{%-", "-%}", " for ", " in ", " endfor ", " if ", " else ", " elif ",
             " endif ", " set ", "namespace(", "loop.index", "loop.last", "messages", "message['role']",
             "message['content']", "add_generation_prompt", "bos_token", "eos_token", "raise_exception(", "range(",
             ".split(", ".strip()", "|length", "|join", " is defined", " not ", " and ", " or ", "~", "*", "**",
             "[-1]", "[::-1]", "'</think>'", "macro ", "endmacro", "call ", "recursive", "loop(", "break", "continue",
             "tool_calls", "'user'", "'assistant'", "'system'", "'tool'"]
    write(FUZZ / "dict" / "jinja.dict", "".join(map(dict_line, jinja)))
    st = ['"dtype"', '"shape"', '"data_offsets"', '"__metadata__"', '"F32"', '"F16"', '"BF16"', '"F8_E4M3"', '"I64"',
          '"U8"', '"F64"', '"weight_map"', '"metadata"', "_scale_inv", ".weight", "model.layers.0.", "model.layers.1.",
          "lm_head", "embed_tokens", "4294967295", "18446744073709551615", "[]", "[0]"]
    write(FUZZ / "dict" / "safetensors.dict", "".join(map(dict_line, st)))
    tok = ['"added_tokens"', '"vocab"', '"merges"', '"model"', '"BPE"', '"WordLevel"', '"WordPiece"', '"Unigram"',
           '"ByteLevel"', '"Sequence"', '"Split"', '"decoder"', '"pre_tokenizer"', '"normalizer"', '"post_processor"',
           '"special"', '"content"', '"id"', '"type"', '"pattern"', '"Regex"', '"NFC"', '"NFKC"', '"TemplateProcessing"',
           '"unk_token"', '"byte_fallback"', '"bos_token"', '"eos_token"', '"add_bos_token"', '"chat_template"',
           "4294967295", "<｜begin▁of▁sentence｜>", "<think>", "</think>", "<｜User｜>", "<｜Assistant｜>"]
    write(FUZZ / "dict" / "tokenizer.dict", "".join(map(dict_line, tok)))


if __name__ == "__main__":
    fixtures()
    configs()
    index()
    tokenizer_inputs()
    generation()
    capi()
    dictionaries()
