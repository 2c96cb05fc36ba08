#!/usr/bin/env python3
"""Make the GGUF test fixtures under deepseek-core/tests/fixtures/gguf/ with llama.cpp's own tools.

Truth for GGUF comes from llama.cpp: every file here is written by llama.cpp's converter
(`convert_hf_to_gguf.py`) or its `llama-quantize`, and every golden is llama.cpp's own output
(through llama-cpp-python), never our code. Nothing here runs in CI; run it by hand.

Reference environment (outside the repository; ~25 minutes on 2 cores)
----------------------------------------------------------------------
    python3 -m venv /work/ref/venv
    /work/ref/venv/bin/pip install torch transformers safetensors numpy sentencepiece protobuf
    cd /work/ref && /work/ref/venv/bin/pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36
    tar xzf llama_cpp_python-0.3.36.tar.gz
    L=/work/ref/llama_cpp_python-0.3.36/vendor/llama.cpp          # llama.cpp commit 0c1e570
    /work/ref/venv/bin/pip install -e $L/gguf-py                     # gguf-py 0.19.0
    apt-get install -y cmake
    cmake -S $L -B /work/ref/llama-build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
          -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=ON -DLLAMA_BUILD_TOOLS=ON
          # (on a CPU with AMX use the explicit non-AMX flag list of shared/PERF.md instead)
    cmake --build /work/ref/llama-build -j2 --target llama-quantize llama-bench llama-cli \
          llama-simple llama-tokenize llama-gguf
    CMAKE_ARGS="-DGGML_NATIVE=ON" /work/ref/venv/bin/pip install --no-binary :all: \
          /work/ref/llama_cpp_python-0.3.36.tar.gz                 # ~10 minutes
Then, from the repository root:
    /work/ref/venv/bin/python tools/make_gguf_fixtures.py          # everything
    /work/ref/venv/bin/python tools/make_gguf_fixtures.py f32 quant   # some stages
Paths can be moved with LLAMA_CPP_DIR (the vendored llama.cpp source), LLAMA_BIN_DIR (the folder
with llama-quantize) and GGUF_WORK_DIR (scratch; default /tmp/gguf-fixtures-work).

The synthetic vocabulary (why and what)
---------------------------------------
llama.cpp's converter writes the tokenizer from the checkpoint's tokenizer files and checks that
`vocab_size` covers it; the tiny fixtures have vocab 512 and no tokenizer. For them (stages `f32`,
`quant`, `legacy`) the converter is run in-process with ONE method replaced: the model class's
`set_vocab` writes a synthetic GPT-2-style byte-level BPE vocabulary of exactly `vocab_size`
tokens (`synthetic_vocab` below): tokenizer.ggml.model "gpt2", pre "default", the 256 GPT-2
byte tokens, then merged tokens ("Ġ t" -> "Ġt", "a b" -> "ab", ...) with their merges, bos/eos ids
from config.json as CONTROL tokens "<|bos|>"/"<|eos|>". Everything else (tensor names, the
`kv_b_proj` split into `attn_k_b`/`attn_v_b`, expert stacking, FP8 dequantisation, all metadata
keys) is the converter's own code, untouched. The goldens feed token ids, so the vocabulary only
has to load. Stage `tok` uses the real R1 tokenizers and the converter's own `set_vocab`.

Real tokenizers (stage `tok`) and transformers 4
------------------------------------------------
The converter names the pre-tokenizer by hashing `AutoTokenizer(...).encode(chktxt)`. R1's
tokenizer.json has no post-processor that adds BOS; transformers 4.x adds it from
tokenizer_config.json's `add_bos_token: true`, transformers 5.x does not. With transformers 5.25
the R1 hash is llama.cpp's `joyai-llm` entry (same regex as deepseek-v3, so llama.cpp tokenizes
identically) and R1-Distill-Qwen's is `qwen2`, and `tokenizer.ggml.add_bos_token` comes out
false. The released GGUFs were converted with transformers 4.x (pre `deepseek-v3` /
`deepseek-r1-qwen`, add_bos_token true), so the stage runs the converter with transformers 4.57
first on PYTHONPATH: `pip install --target /work/ref/tf4 'transformers>=4.46,<5'`
(TRANSFORMERS4_DIR moves it). The stage fails if the pre-tokenizer is not the expected one.

What it writes (deepseek-core/tests/fixtures/gguf/)
---------------------------------------------------
* `<fixture>-F32.gguf` / `-BF16.gguf`: converter output of an existing HF fixture. Check these
  against the fixture's transformers golden (`../<fixture>/golden.safetensors`, same input_ids).
  The manifest records how far llama.cpp's own logits on them are from that golden.
* `<fixture>-<TYPE>[-pure].gguf`: `llama-quantize [--pure]` of the converter's F32 output.
* `<fixture>-legacy-<TYPE>.gguf`: the pre-MLA layout (before llama.cpp PR 12801), rewritten with
  gguf-py from the converter's output: one `blk.N.attn_kv_b` [kv_lora -> n_head*(nope+v)] per
  layer (the unsplit kv_b_proj), no `*.attention.key_length_mla`/`value_length_mla`,
  `attention.key_length` = nope+rope, `attention.value_length` = v_head_dim and
  `attention.head_count_kv` = n_head (as the converter wrote them then).
* `<name>.golden.safetensors`, llama.cpp's outputs on one GGUF (KV cache F32, 2 threads):
    `input_ids` I64 [T]            the source fixture's golden prompt,
    `greedy_ids` I64 [16]          llama.cpp's own greedy continuation (token by token),
    `logits` F32 [T+16, V]         one llama.cpp prefill over input_ids + greedy_ids
                                   (row i predicts token i+1),
    `ref_greedy_ids` I64 [16]      the fixture's transformers greedy continuation,
    `ref_logits` F32 [T+16, V]     one llama.cpp prefill over input_ids + ref_greedy_ids.
* `tokenizer-<name>.golden.json`: llama.cpp's tokenization (llama-cpp-python
  `tokenize(text, add_bos, special=True)`) of tokenizers/corpus.json's strings, with and without
  bos, plus the prompt of the r1tok fixtures.
* `manifest.json`: per file its source fixture, outtype / quant type, layout, golden, size, sha256,
  every tensor's ggml type and shape (ggml order, fastest dimension first), the metadata keys the
  converter wrote, and llama.cpp's agreement with the transformers golden; llama.cpp version.
* `LICENSE-llama.cpp` (MIT): llama.cpp's licence, next to files made by its tools.

deepseek2 files of q_lora_rank-null models (v2_lite_tiny, v2_quant)
-------------------------------------------------------------------
The converter writes no `deepseek2.attention.q_lora_rank` for them (as for the real V2-Lite), but
llama.cpp's deepseek2 loader (src/models/deepseek2.cpp) reads that key as required unless the
model has 26/27 layers (how it recognises V2-Lite). So llama.cpp (and llama-quantize) refuse
the tiny files as converted. llama.cpp's logits are taken on a copy with `q_lora_rank = 0` added
(`with_q_lora_zero`; 0 selects the same `attn_q` path), and the quantised v2_quant files, which
llama-quantize can only make from such a copy, keep that key. The committed F32 file is the
converter's, without the key.

Checked, not committed
----------------------
`v3_fp8` (F32, 3.9 MB), the r1tok models with weights (`--tok-weights`) and the R1-Distill-Qwen
vocabulary GGUF are made in GGUF_WORK_DIR, checked, and recorded under "checked_not_committed" in
the manifest, to keep the repository small.
"""

import argparse
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "deepseek-core" / "tests" / "fixtures"
OUT = FIXTURES / "gguf"
LLAMA_CPP = Path(os.environ.get("LLAMA_CPP_DIR", "/work/ref/llama_cpp_python-0.3.36/vendor/llama.cpp"))
LLAMA_BIN = Path(os.environ.get("LLAMA_BIN_DIR", "/work/ref/llama-build/bin"))
WORK = Path(os.environ.get("GGUF_WORK_DIR", "/tmp/gguf-fixtures-work"))
# transformers 4.x for the real-tokenizer conversions (see "Real tokenizers" in the docstring).
TRANSFORMERS4 = Path(os.environ.get("TRANSFORMERS4_DIR", "/work/ref/tf4"))
# llama-cpp-python loads libllama.so from LLAMA_CPP_LIB_PATH when set (see the environment notes).
if "LLAMA_CPP_LIB_PATH" not in os.environ and (LLAMA_BIN / "libllama.so").exists():
    os.environ["LLAMA_CPP_LIB_PATH"] = str(LLAMA_BIN)

N_NEW = 16
THREADS = 2

# Stage `f32`: converter output checked against the transformers goldens.
F32_FIXTURES = ["v3_tiny", "v2_lite_tiny", "v2_group_tiny", "qwen2_tiny", "llama3_tiny", "qwen3_tiny", "v3_fp8"]
# Stage `quant`: (fixture, llama-quantize type, --pure).
# v2_quant gets fewer files to keep the committed size down (the formats are covered by v3_quant).
QUANTS = {
    "v3_quant": [("Q8_0", True), ("Q4_0", True), ("Q4_1", True), ("Q4_0", False)],
    "v2_quant": [("Q8_0", True), ("Q4_0", False)],
}
# Converted and checked against transformers, recorded in the manifest, but not committed: the F32
# file is 3.9 MB and holds nothing a loader has not seen in v3_tiny-F32.gguf (the converter
# dequantises FP8 itself, weight * weight_scale_inv per 128x128 block, partial edge blocks included).
NOT_COMMITTED = {"v3_fp8"}


def log(*a):
    print(*a, flush=True)


def sha256(p):
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


# ----------------------------------------------------------------------------------------------
# The converter, run in a child process (`_convert` sub-command) so its class patches stay there.
# ----------------------------------------------------------------------------------------------

def gpt2_byte_tokens():
    """GPT-2's bytes_to_unicode: the 256 printable stand-ins for bytes, in byte order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs))
    return [chr(table[b]) for b in range(256)]


def synthetic_vocab(vocab_size, bos, eos):
    """tokens, token types, merges of a byte-level BPE vocabulary of exactly vocab_size tokens.

    Special ids from config.json get CONTROL tokens; the other ids take, in order, the 256 byte
    tokens and then merged tokens, each with the merge that makes it (so every merge result is a
    token, as llama.cpp's BPE requires)."""
    import gguf
    special = {}
    if bos is not None:
        special[bos] = "<|bos|>"
    if eos is not None:
        special[eos] = "<|eos|>" if eos != bos else "<|endoftext|>"
    byte_tok = gpt2_byte_tokens()
    letters = "etaoinshrdlucmfwypvbgkjqxz"
    space = byte_tok[ord(" ")]
    pairs = [(space, c) for c in letters] + [(a, b) for a in letters for b in letters]
    n_free = vocab_size - len(special)
    if n_free < 256:
        raise SystemExit(f"vocab_size {vocab_size} too small for a byte-level vocabulary")
    pairs = pairs[: n_free - 256]
    if len(pairs) < n_free - 256:
        raise SystemExit(f"vocab_size {vocab_size} needs more synthetic merges than defined")
    plain = byte_tok + [a + b for a, b in pairs]
    merges = [f"{a} {b}" for a, b in pairs]
    tokens, types = [], []
    it = iter(plain)
    for i in range(vocab_size):
        if i in special:
            tokens.append(special[i])
            types.append(gguf.TokenType.CONTROL)
        else:
            tokens.append(next(it))
            types.append(gguf.TokenType.NORMAL)
    assert len(set(tokens)) == vocab_size
    return tokens, types, merges


def synthetic_set_vocab(self):
    """Replacement for the converter's set_vocab (see the module docstring)."""
    hp = self.hparams
    bos, eos = hp.get("bos_token_id"), hp.get("eos_token_id")
    tokens, types, merges = synthetic_vocab(hp["vocab_size"], bos, eos)
    w = self.gguf_writer
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    if bos is not None:
        w.add_bos_token_id(bos)
    if eos is not None:
        w.add_eos_token_id(eos)


def child_convert(src, outfile, outtype, synthetic, vocab_only):
    sys.path.insert(0, str(LLAMA_CPP))
    sys.path.insert(1, str(LLAMA_CPP / "gguf-py"))
    import convert_hf_to_gguf as conv
    if synthetic:
        real = conv.get_model_class

        def patched(*a, **k):
            cls = real(*a, **k)
            cls.set_vocab = synthetic_set_vocab
            return cls

        conv.get_model_class = patched
    sys.argv = ["convert_hf_to_gguf.py", str(src), "--outfile", str(outfile), "--outtype", outtype]
    if vocab_only:
        sys.argv.append("--vocab-only")
    conv.main()


def convert(src, outfile, outtype, synthetic=True, vocab_only=False, transformers4=False):
    cmd = [sys.executable, __file__, "_convert", str(src), str(outfile), outtype]
    if synthetic:
        cmd.append("--synthetic")
    if vocab_only:
        cmd.append("--vocab-only")
    env = dict(os.environ)
    if transformers4:
        if not (TRANSFORMERS4 / "transformers").is_dir():
            raise SystemExit(f"{TRANSFORMERS4}: pip install --target {TRANSFORMERS4} 'transformers>=4.46,<5' first")
        env["PYTHONPATH"] = os.pathsep.join([str(TRANSFORMERS4)] + [p for p in [env.get("PYTHONPATH")] if p])
    r = subprocess.run(cmd, capture_output=True, text=True, errors="replace", env=env)
    (WORK / f"{Path(outfile).name}.convert.log").write_text(r.stdout + r.stderr)
    if r.returncode != 0:
        raise RuntimeError(f"converter failed on {src}:\n{r.stderr[-3000:]}")
    return r.stdout + r.stderr


def quantize(src, dst, qtype, pure):
    cmd = [str(LLAMA_BIN / "llama-quantize")] + (["--pure"] if pure else []) + [str(src), str(dst), qtype, str(THREADS)]
    r = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    (WORK / f"{Path(dst).name}.quantize.log").write_text(r.stdout + r.stderr)
    if r.returncode != 0:
        raise RuntimeError(f"llama-quantize failed: {' '.join(cmd)}\n{r.stderr[-3000:]}")


# ----------------------------------------------------------------------------------------------
# Reading GGUF (gguf-py)
# ----------------------------------------------------------------------------------------------

def gguf_mod():
    sys.path.insert(0, str(LLAMA_CPP / "gguf-py"))
    import gguf
    return gguf


def describe(path):
    """Metadata (without the big tokenizer arrays) and tensors {name: [type, ggml shape]}."""
    gguf = gguf_mod()
    r = gguf.GGUFReader(str(path))
    meta = {}
    for f in r.fields.values():
        if f.name.startswith("GGUF."):
            continue
        if f.types and f.types[0] == gguf.GGUFValueType.ARRAY:
            meta[f.name] = f"array[{f.types[-1].name}, {len(f.data)}]"
        else:
            v = f.contents()
            meta[f.name] = v
    tensors = {t.name: [t.tensor_type.name, [int(x) for x in t.shape]] for t in r.tensors}
    return meta, tensors


def type_counts(tensors):
    c = {}
    for ty, _ in tensors.values():
        c[ty] = c.get(ty, 0) + 1
    return c


# ----------------------------------------------------------------------------------------------
# The legacy (pre PR 12801) layout
# ----------------------------------------------------------------------------------------------

def write_legacy(src, dst, cfg):
    """Rewrites a converter deepseek2 GGUF (F32) with one attn_kv_b per layer, as before PR 12801."""
    gguf = gguf_mod()
    r = gguf.GGUFReader(str(src))
    arch = r.fields["general.architecture"].contents()
    assert arch == "deepseek2", arch
    nh, nope, rope, v = cfg["num_attention_heads"], cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    kv_lora = cfg["kv_lora_rank"]
    new_vals = {
        f"{arch}.attention.key_length": nope + rope,
        f"{arch}.attention.value_length": v,
        f"{arch}.attention.head_count_kv": nh,
    }
    drop = {f"{arch}.attention.key_length_mla", f"{arch}.attention.value_length_mla"}
    w = gguf.GGUFWriter(str(dst), arch=arch)
    for f in r.fields.values():
        if f.name == "general.architecture" or f.name.startswith("GGUF.") or f.name in drop:
            continue
        vt = f.types[0]
        sub = f.types[-1] if vt == gguf.GGUFValueType.ARRAY else None
        val = new_vals.get(f.name, f.contents())
        w.add_key_value(f.name, val, vt, sub_type=sub)
    by_name = {t.name: t for t in r.tensors}
    for t in r.tensors:
        if t.name.endswith(".attn_v_b.weight"):
            continue
        if t.name.endswith(".attn_k_b.weight"):
            assert t.tensor_type == gguf.GGMLQuantizationType.F32
            vb = by_name[t.name.replace("attn_k_b", "attn_v_b")]
            k_b = np.asarray(t.data)      # numpy [n_head, kv_lora, nope] (k_b transposed by the converter)
            v_b = np.asarray(vb.data)     # numpy [n_head, v, kv_lora]
            assert k_b.shape == (nh, kv_lora, nope) and v_b.shape == (nh, v, kv_lora), (k_b.shape, v_b.shape)
            kv_b = np.concatenate([k_b.transpose(0, 2, 1), v_b], axis=1).reshape(nh * (nope + v), kv_lora)
            w.add_tensor(t.name.replace("attn_k_b", "attn_kv_b"), np.ascontiguousarray(kv_b, dtype=np.float32))
            continue
        w.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ----------------------------------------------------------------------------------------------
# llama.cpp's outputs (llama-cpp-python)
# ----------------------------------------------------------------------------------------------

def load_llama(path, **kw):
    from llama_cpp import Llama
    return Llama(model_path=str(path), n_ctx=128, n_batch=128, n_ubatch=128, n_threads=THREADS,
                 n_threads_batch=THREADS, logits_all=True, verbose=False, type_k=0, type_v=0, **kw)


def prefill_logits(llm, ids):
    llm.reset()
    llm.eval(list(map(int, ids)))
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def greedy(llm, prompt, n):
    llm.reset()
    llm.eval(list(map(int, prompt)))
    out = []
    for _ in range(n):
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(tok)
        llm.eval([tok])
    return out


def golden_of(fixture):
    from safetensors.numpy import load_file
    return load_file(str(FIXTURES / fixture / "golden.safetensors"))


def run_golden(gguf_path, fixture, golden_out):
    """llama.cpp's greedy and logits on gguf_path for fixture's prompt; writes the golden file."""
    from safetensors.numpy import save_file
    g = golden_of(fixture)
    prompt, ref = g["input_ids"], g["greedy_ids"]
    llm = load_llama(gguf_path)
    own = greedy(llm, prompt, N_NEW)
    logits = prefill_logits(llm, np.concatenate([prompt, own]))
    ref_logits = prefill_logits(llm, np.concatenate([prompt, ref]))
    del llm
    save_file({
        "input_ids": prompt.astype(np.int64),
        "greedy_ids": np.array(own, dtype=np.int64),
        "logits": logits,
        "ref_greedy_ids": ref.astype(np.int64),
        "ref_logits": ref_logits,
    }, str(golden_out))
    return compare_to_transformers(ref_logits, g, own)


def compare_to_transformers(ref_logits, g, own_greedy):
    want = g["logits"]
    d = np.abs(ref_logits - want)
    T = len(g["input_ids"])
    top = ref_logits.argmax(-1)
    return {
        "max_abs_err_vs_transformers": float(d.max()),
        "max_abs_err_prompt_rows": float(d[:T].max()),
        "first_row_over_1e-3": int(np.argmax(d.max(-1) > 1e-3)) if (d.max(-1) > 1e-3).any() else None,
        "transformers_logit_std": float(want.std()),
        "argmax_agrees_with_transformers_rows": int((top == want.argmax(-1)).sum()),
        "rows": int(want.shape[0]),
        "llama_greedy_equals_transformers_greedy": [int(x) for x in own_greedy] == [int(x) for x in g["greedy_ids"]],
    }


# ----------------------------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------------------------

def file_entry(path, **extra):
    meta, tensors = describe(path)
    e = {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256(path)}
    e.update(extra)
    e["tensor_type_counts"] = type_counts(tensors)
    e["metadata"] = {k: v for k, v in meta.items() if not k.startswith("general.") or k in (
        "general.architecture", "general.file_type", "general.quantization_version", "general.alignment")}
    e["tensors"] = tensors
    return e


def with_q_lora_zero(src, dst):
    """A copy of src with `deepseek2.attention.q_lora_rank = 0` added (see stage notes)."""
    gguf = gguf_mod()
    r = gguf.GGUFReader(str(src))
    w = gguf.GGUFWriter(str(dst), arch="deepseek2")
    for f in r.fields.values():
        if f.name == "general.architecture" or f.name.startswith("GGUF."):
            continue
        vt = f.types[0]
        sub = f.types[-1] if vt == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(f.name, f.contents(), vt, sub_type=sub)
    w.add_q_lora_rank(0)
    for t in r.tensors:
        w.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def needs_q_lora_key(fixture):
    cfg = json.loads((FIXTURES / fixture / "config.json").read_text())
    return cfg.get("architectures", [""])[0].startswith("Deepseek") and cfg.get("q_lora_rank") is None


def runnable(path, fixture):
    """The file llama.cpp can run: llama.cpp's deepseek2 loader reads `attention.q_lora_rank` as
    REQUIRED unless n_layer is 26/27 (V2-Lite, detected by depth), so a converter output of a tiny
    q_lora_rank-null model does not load as is; the run uses a copy with q_lora_rank = 0 added
    (which selects the same `attn_q` path). The committed file stays the converter's."""
    if not needs_q_lora_key(fixture) or "deepseek2.attention.q_lora_rank" in describe(path)[0]:
        return path
    dst = WORK / (path.stem + "-qlora0.gguf")
    with_q_lora_zero(path, dst)
    return dst


def stage_f32(manifest):
    for fx in F32_FIXTURES:
        src = FIXTURES / fx
        out = (WORK if fx in NOT_COMMITTED else OUT) / f"{fx}-F32.gguf"
        log(f"convert {fx} -> {out.name}")
        convert(src, out, "f32")
        g = golden_of(fx)
        llm = load_llama(runnable(out, fx))
        ids = np.concatenate([g["input_ids"], g["greedy_ids"]])
        got = prefill_logits(llm, ids)
        own = greedy(llm, g["input_ids"], N_NEW)
        del llm
        agree = compare_to_transformers(got, g, own)
        if fx == "qwen3_tiny" and "logits_transformers_default" in g:
            agree["max_abs_err_vs_transformers_ignoring_attn_factor"] = float(
                np.abs(got - g["logits_transformers_default"]).max())
        if fx == "v2_group_tiny":
            agree["max_abs_err_vs_transformers_with_sum_top2_group_score"] = float(
                np.abs(got - v2_logits_with_sum_top2_groups(fx, ids)).max())
        log(f"  {fx}: llama.cpp vs transformers max abs err {agree['max_abs_err_vs_transformers']:.3e}, "
            f"greedy equal {agree['llama_greedy_equals_transformers_greedy']}")
        section = "checked_not_committed" if fx in NOT_COMMITTED else "files"
        manifest[section][out.name] = file_entry(
            out, source_fixture=fx, made_by="convert_hf_to_gguf.py --outtype f32 (synthetic vocab)",
            outtype="f32", layout=layout_of(fx), golden=f"../{fx}/golden.safetensors",
            llama_cpp_vs_transformers=agree,
            llama_cpp_needs_q_lora_rank_key=needs_q_lora_key(fx))


def v2_logits_with_sum_top2_groups(fx, ids):
    """transformers' DeepseekV2 with llama.cpp's group rule swapped in for group_limited_greedy.

    llama.cpp (build_moe_ffn) scores an expert group by the sum of its top-2 selection scores for
    every gating function; DeepSeek-V2's group_limited_greedy scores it by its max softmax
    probability. This reruns the reference with llama.cpp's rule to show that this is the only
    difference on v2_group_tiny."""
    import torch
    import torch.nn.functional as F
    import transformers.models.deepseek_v2.modeling_deepseek_v2 as mdl
    from transformers import DeepseekV2ForCausalLM

    def forward(self, hidden_states):
        hidden_states = hidden_states.view(-1, self.hidden_dim)
        router_logits = F.linear(hidden_states.float(), self.weight.float())
        scores = router_logits.softmax(dim=-1, dtype=torch.float32)
        per = self.num_experts // self.num_group
        gs = scores.view(-1, self.num_group, per).topk(2, dim=-1).values.sum(-1)
        keep = torch.zeros_like(gs).scatter_(1, torch.topk(gs, k=self.topk_group, dim=-1)[1], 1)
        mask = keep.unsqueeze(-1).expand(-1, self.num_group, per).reshape(-1, self.num_experts)
        w, i = torch.topk(scores.masked_fill(~mask.bool(), 0.0), k=self.top_k, dim=-1, sorted=False)
        return router_logits, w * self.routed_scaling_factor, i

    saved = mdl.DeepseekV2TopkRouter.forward
    mdl.DeepseekV2TopkRouter.forward = forward
    try:
        model = DeepseekV2ForCausalLM.from_pretrained(str(FIXTURES / fx), dtype=torch.float32).eval()
        with torch.no_grad():
            return model(torch.tensor(ids)[None]).logits[0].numpy()
    finally:
        mdl.DeepseekV2TopkRouter.forward = saved


def layout_of(fx):
    cfg = json.loads((FIXTURES / fx / "config.json").read_text())
    arch = cfg["architectures"][0]
    return "deepseek2 MLA (attn_k_b/attn_v_b)" if arch.startswith("Deepseek") else arch


def stage_quant(manifest):
    for fx in QUANTS:
        f32 = WORK / f"{fx}-F32.gguf"
        log(f"convert {fx} -> {f32} (not committed)")
        convert(FIXTURES / fx, f32, "f32")
        run_f32 = runnable(f32, fx)
        g = golden_of(fx)
        llm = load_llama(run_f32)
        agree = compare_to_transformers(prefill_logits(llm, np.concatenate([g["input_ids"], g["greedy_ids"]])), g,
                                        greedy(llm, g["input_ids"], N_NEW))
        del llm
        manifest["intermediates"][f32.name] = {"source_fixture": fx, "bytes": f32.stat().st_size,
                                               "llama_cpp_vs_transformers": agree,
                                               "note": "converter --outtype f32; input of llama-quantize, not committed"}
        log(f"  {fx} F32: max abs err {agree['max_abs_err_vs_transformers']:.3e}")
        for qtype, pure in QUANTS[fx]:
            name = f"{fx}-{qtype}{'-pure' if pure else ''}"
            out = OUT / f"{name}.gguf"
            # llama-quantize loads hparams like llama.cpp does, so a q_lora_rank-null deepseek2
            # needs the q_lora_rank = 0 key to quantize at all (see `runnable`); its outputs keep it.
            quantize(run_f32, out, qtype, pure)
            golden = OUT / f"{name}.golden.safetensors"
            agree = run_golden(runnable(out, fx), fx, golden)
            log(f"  {name}: {out.stat().st_size} bytes, err vs transformers {agree['max_abs_err_vs_transformers']:.3f}")
            manifest["files"][out.name] = file_entry(
                out, source_fixture=fx, made_by=f"llama-quantize {'--pure ' if pure else ''}{fx}-F32.gguf {qtype}",
                outtype=qtype, pure=pure, layout=layout_of(fx), golden=golden.name,
                llama_cpp_vs_transformers=agree, llama_cpp_needs_q_lora_rank_key=needs_q_lora_key(fx),
                q_lora_rank_0_key_added=needs_q_lora_key(fx))


def stage_legacy(manifest):
    # F32 legacy of v3_tiny, from the committed converter output.
    cfg = json.loads((FIXTURES / "v3_tiny" / "config.json").read_text())
    out = OUT / "v3_tiny-legacy-F32.gguf"
    write_legacy(OUT / "v3_tiny-F32.gguf", out, cfg)
    entry = legacy_entry(out, "v3_tiny", "rewritten with gguf-py from v3_tiny-F32.gguf", "f32")
    manifest["files"][out.name] = entry
    # Q8_0 legacy: llama-quantize --pure of that legacy F32 file, so attn_kv_b is quantised by
    # llama-quantize as it was in legacy quantised files (v3_tiny, not v3_quant, to stay small:
    # rows whose width is not a multiple of 32 get llama-quantize's fallback type).
    q = OUT / "v3_tiny-legacy-Q8_0-pure.gguf"
    quantize(out, q, "Q8_0", True)
    manifest["files"][q.name] = legacy_entry(
        q, "v3_tiny", "llama-quantize --pure v3_tiny-legacy-F32.gguf Q8_0", "Q8_0")


def legacy_entry(out, fx, how, qtype):
    golden = OUT / (out.stem + ".golden.safetensors")
    try:
        agree = run_golden(out, fx, golden)
        loads = True
        err = None
    except Exception as e:  # llama.cpp refusing the legacy layout is a finding, recorded as such
        agree, loads, err = None, False, repr(e)
        golden = None
    log(f"  {out.name}: llama.cpp loads {loads}; {agree and agree['max_abs_err_vs_transformers']}")
    return file_entry(out, source_fixture=fx, made_by=how, outtype=qtype,
                      layout="deepseek2 legacy (attn_kv_b, no *_mla keys, pre llama.cpp PR 12801)",
                      golden=golden.name if golden else None, llama_cpp_loads=loads, llama_cpp_error=err,
                      llama_cpp_vs_transformers=agree)


R1_DIR = FIXTURES / "tokenizers" / "deepseek-r1"
QWEN_DIR = FIXTURES / "tokenizers" / "deepseek-r1-distill-qwen-7b"


def staged_dir(name, files):
    d = WORK / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    for src in files:
        shutil.copy(src, d / src.name)
    return d


def stage_tok(manifest, with_weights):
    corpus = json.loads((FIXTURES / "tokenizers" / "corpus.json").read_text())
    # The R1-Distill-Qwen vocabulary GGUF (5.9 MB) stays out of the repository; its tokenization
    # golden is committed.
    jobs = [("deepseek-r1", "v3_r1tok", R1_DIR, "bf16", "deepseek-v3", True),
            ("deepseek-r1-distill-qwen-7b", "qwen2_r1tok", QWEN_DIR, "f16", "deepseek-r1-qwen", False)]
    for tok_name, fx, tok_dir, outtype, want_pre, commit in jobs:
        files = [FIXTURES / fx / "config.json", tok_dir / "tokenizer.json", tok_dir / "tokenizer_config.json"]
        if (FIXTURES / fx / "generation_config.json").exists():
            files.append(FIXTURES / fx / "generation_config.json")
        d = staged_dir(fx, files)
        vocab_out = (OUT if commit else WORK) / f"vocab-{tok_name}.gguf"
        log(f"convert vocab only {tok_name} -> {vocab_out.name}")
        convert(d, vocab_out, outtype, synthetic=False, vocab_only=True, transformers4=True)
        meta, _ = describe(vocab_out)
        if meta.get("tokenizer.ggml.pre") != want_pre:
            raise SystemExit(f"{tok_name}: converter chose pre {meta.get('tokenizer.ggml.pre')!r}, want {want_pre!r}")
        golden = OUT / f"tokenizer-{tok_name}.golden.json"
        tok_res = tokenize_corpus(vocab_out, corpus, tok_name, fx)
        golden.write_text(json.dumps(tok_res["golden"], ensure_ascii=False, indent=1) + "\n")
        manifest["files" if commit else "checked_not_committed"][vocab_out.name] = {
            "file": vocab_out.name, "bytes": vocab_out.stat().st_size, "sha256": sha256(vocab_out),
            "source": f"tokenizers/{tok_name} + {fx}/config.json", "made_by": "convert_hf_to_gguf.py --vocab-only",
            "tokenizer.ggml.pre": meta.get("tokenizer.ggml.pre"), "golden": golden.name,
            "metadata": {k: v for k, v in meta.items() if not k.startswith("general.")},
            "corpus_vs_transformers": tok_res["summary"],
        }
        log(f"  pre = {meta.get('tokenizer.ggml.pre')}; corpus vs transformers: {tok_res['summary']}")
        if with_weights:
            make_tok_model(manifest, fx, tok_dir, outtype, d)


def make_tok_model(manifest, fx, tok_dir, outtype, d):
    if not (FIXTURES / fx / "model.safetensors").exists():
        # qwen2_r1tok keeps no weight file: its weights are make_distill_fixtures.py's hash formula.
        sys.path.insert(0, str(ROOT / "tools"))
        import make_distill_fixtures as mdf
        from safetensors.torch import save_file
        cfg = json.loads((FIXTURES / fx / "config.json").read_text())
        salt = json.loads((FIXTURES / fx / "golden.json").read_text())["salt"]
        save_file(mdf.hash_weights(cfg, salt), str(d / "model.safetensors"))
    else:
        shutil.copy(FIXTURES / fx / "model.safetensors", d / "model.safetensors")
    out = WORK / f"{fx}-{outtype.upper()}.gguf"
    convert(d, out, outtype, synthetic=False, transformers4=True)
    gj = json.loads((FIXTURES / fx / "golden.json").read_text())
    llm = load_llama(out)
    own = greedy(llm, gj["input_ids"], N_NEW)
    del llm
    manifest["checked_not_committed"][out.name] = file_entry(
        out, source_fixture=fx, made_by=f"convert_hf_to_gguf.py --outtype {outtype} (real tokenizer)",
        outtype=outtype, golden=f"../{fx}/golden.json",
        llama_cpp_greedy=own, llama_cpp_greedy_equals_transformers=own == gj["greedy_ids"])
    log(f"  {out.name}: greedy equals transformers: {own == gj['greedy_ids']}")


def tokenize_corpus(vocab_gguf, corpus, tok_name, fx):
    from llama_cpp import Llama
    llm = Llama(model_path=str(vocab_gguf), vocab_only=True, verbose=False)
    strings = corpus["strings"]
    no_bos = [llm.tokenize(s.encode("utf-8"), add_bos=False, special=True) for s in strings]
    bos = [llm.tokenize(s.encode("utf-8"), add_bos=True, special=True) for s in strings]
    gj = json.loads((FIXTURES / fx / "golden.json").read_text())
    prompt_ids = llm.tokenize(gj["prompt"].encode("utf-8"), add_bos=False, special=True)
    expected = corpus["expected"].get(tok_name, {}).get("ids")
    mism = [i for i, (a, b) in enumerate(zip(no_bos, expected or [])) if a != b]
    summary = {"strings": len(strings), "differs_from_transformers": mism if expected else "no transformers ids",
               "prompt_equals_fixture_input_ids": prompt_ids == gj["input_ids"],
               "add_bos_true_prepends_bos_to_every_string": all(b[:1] == [llm.token_bos()] for b in bos)}
    golden = {
        "description": (f"llama.cpp's tokenization (llama-cpp-python tokenize(text, add_bos, special=True)) of "
                        f"tokenizers/corpus.json strings with vocab-{tok_name}.gguf; ids_no_bos[i] / ids_with_bos[i] "
                        f"belong to strings[i]; prompt = {fx}/golden.json's prompt."),
        "llama_cpp": llama_version(),
        "strings": strings,
        "ids_no_bos": no_bos,
        "ids_with_bos": bos,
        "prompt": gj["prompt"],
        "prompt_ids": prompt_ids,
    }
    del llm
    return {"golden": golden, "summary": summary}


def llama_version():
    import llama_cpp
    commit = subprocess.run(["git", "-C", str(LLAMA_CPP), "rev-parse", "HEAD"], capture_output=True, text=True, errors="replace").stdout.strip()
    return {"llama_cpp_python": llama_cpp.__version__, "llama_cpp_commit": commit or "unknown",
            "gguf_py": importlib.metadata.version("gguf")}


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "_convert":
        a = sys.argv[2:]
        child_convert(a[0], a[1], a[2], "--synthetic" in a, "--vocab-only" in a)
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stages", nargs="*", default=["f32", "quant", "legacy", "tok"],
                    help="f32 quant legacy tok (default: all)")
    ap.add_argument("--tok-weights", action="store_true",
                    help="also convert the r1tok fixtures with their weights (large; not committed by default)")
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    OUT.mkdir(parents=True, exist_ok=True)
    mpath = OUT / "manifest.json"
    manifest = json.loads(mpath.read_text()) if mpath.exists() else {}
    manifest.setdefault("files", {})
    manifest.setdefault("intermediates", {})
    manifest.setdefault("checked_not_committed", {})
    manifest["llama_cpp"] = llama_version()
    manifest["made_by"] = "tools/make_gguf_fixtures.py"
    for st in args.stages:
        {"f32": stage_f32, "quant": stage_quant, "legacy": stage_legacy,
         "tok": lambda m: stage_tok(m, args.tok_weights)}[st](manifest)
        mpath.write_text(json.dumps(manifest, ensure_ascii=False, indent=1, sort_keys=True) + "\n")
    shutil.copy(LLAMA_CPP / "LICENSE", OUT / "LICENSE-llama.cpp")


if __name__ == "__main__":
    main()
