#!/usr/bin/env python3
"""Make the K-quant / i-quant decode goldens under deepseek-core/tests/fixtures/kquants/.

Truth comes from llama.cpp, never from our code:
  1. a tiny one-layer `llama` GGUF in F32 is written with gguf-py, its `blk.0.attn_q.weight` rows
     holding crafted distributions (below) that exercise every field of the super-blocks;
  2. llama.cpp's own `llama-quantize --pure` turns it into each type (the bytes are llama.cpp's);
  3. the first ROWS rows of that tensor are dequantized twice: by gguf-py's numpy dequantizers
     (`gguf.quants.dequantize`, which mirror ggml's `dequantize_row_*`) and by ggml's C
     `dequantize_row_<type>` itself (libggml-base.so through ctypes); the script stops unless the
     two agree bit for bit;
  4. `<type>.bin` (the raw ggml rows) and `<type>.f32` (little-endian float32, row-major) are
     written, with `manifest.json` (shape, sha256s, llama.cpp commit);
  5. for the integer dot products: one activation row `act.f32` (256 floats), quantised by ggml's
     own `quantize_row_q8_K_ref` / `_q8_0_ref` / `_q8_1_ref` (`act_q8_k.bin`, `act_q8_0.bin`,
     `act_q8_1.bin`), and `<type>.dot`: ggml's `ggml_vec_dot_<type>_<act>` (libggml-cpu.so, the
     x86 kernel llama.cpp runs on this machine) of each golden row with it, 8 floats.

Stage `model` (a GGUF mixing formats per tensor, as llama.cpp's K-quant mixtures do):
  6. fixture `v3_quant` is written as an F32 GGUF by our own writer (`save_gguf`, through the
     ignored test `write_v3_quant_f32_gguf` of deepseek-core/tests/kquants.rs);
  7. llama-quantize makes it Q4_K_M with per-tensor overrides so that one 1.2 MB file holds every
     format we read as stored: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS, IQ4_NL (IQ4_XS's fallback
     on 64-wide rows), Q4_0, Q4_1, Q5_0 and Q5_1 (Q4_K/Q5_K's fallbacks), Q8_0, BF16 and F32
     (`v3_quant-kmix.gguf`; `tokenizer.ggml.model = none` so llama.cpp loads it without a vocab);
  8. llama.cpp runs that very file (llama-cpp-python, F32 KV cache, 2 threads) over the
     fixture's golden prompt + greedy ids: `v3_quant-kmix.llama.f32`, [T, vocab] logits.

Stage `quantize` (goldens for our quantizers, issue 14 item 3):
  9. `quantize.f32`: QROWS x QCOLS float32 rows of many distributions (Gaussian at several scales,
     all-positive, all-negative, heavy tails, outliers, zero sub-blocks, constant rows, integers
     that land on rounding ties, f16-subnormal and huge magnitudes), and `crafted.f32`: the 8
     crafted rows of stage `rows` (so our quantizers also meet llama-quantize's own bytes,
     q4_k.bin / q6_k.bin / q5_0.bin);
 10. `quantize.<type>.bin`: ggml's `quantize_<type>(src, dst, nrow, n_per_row, NULL)` from
     libggml-base.so, the function llama-quantize calls without an imatrix (Q4_K and Q6_K go to
     `quantize_row_q4_K_ref` / `quantize_row_q6_K_ref`), for Q4_K, Q6_K and their fallbacks Q5_0
     and Q8_0; the stage first checks that ggml's function reproduces llama-quantize's bytes
     of the crafted rows.

Stage `q4km` (Q4_K_M against llama.cpp's, issue 14 item 3), for fixtures v3_quant and v2_quant:
 11. the fixture is written as an F32 GGUF by our writer, and llama-quantize makes it Q4_K_M
     with llama.cpp's own rule (no --pure, no imatrix): `<fixture>-q4_k_m.gguf`; llama.cpp runs
     it over the golden prompt + greedy ids: `<fixture>-q4_k_m.llama.f32`;
 12. our writer also converts the fixture with `dtype = q4_k_m` (`<fixture>-ours-q4_k_m.gguf`,
     not kept) and llama.cpp runs that file too: `<fixture>-ours-q4_k_m.llama.f32`.

Run by hand from the repository root (see tools/make_gguf_fixtures.py for the reference setup):
    /work/ref/venv/bin/python tools/make_kquant_fixtures.py [rows] [model] [quantize] [q4km]
Paths: LLAMA_CPP_DIR (vendored llama.cpp source), LLAMA_BIN_DIR (llama-quantize and libggml-base.so).
"""

import ctypes
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "deepseek-core" / "tests" / "fixtures" / "kquants"
LLAMA_CPP = Path(os.environ.get("LLAMA_CPP_DIR", "/work/ref/llama_cpp_python-0.3.36/vendor/llama.cpp"))
LLAMA_BIN = Path(os.environ.get("LLAMA_BIN_DIR", "/work/ref/llama-build/bin"))
sys.path.insert(0, str(LLAMA_CPP / "gguf-py"))
import gguf  # noqa: E402
from gguf import GGMLQuantizationType as T  # noqa: E402

TYPES = ["Q4_K", "Q6_K", "Q5_K", "Q3_K", "Q2_K", "IQ4_NL", "IQ4_XS", "Q5_0", "Q5_1"]
HIDDEN, FFN, VOCAB, HEADS = 256, 512, 256, 2
ROWS = 8  # golden rows of blk.0.attn_q.weight (one 256-weight super-block each)


def crafted_rows(rng):
    """Eight rows that reach the corners of the formats: signs, mins, zeros, outliers, tiny scales."""
    n = HIDDEN
    rows = [
        rng.standard_normal(n),                              # plain Gaussian
        0.02 * rng.standard_normal(n),                       # typical weight magnitude
        rng.uniform(0.5, 1.5, n),                            # all positive: the mins carry it
        rng.uniform(-3.0, -1.0, n),                          # all negative
        np.where(rng.random(n) < 0.03, 40.0, 1.0) * rng.standard_normal(n),  # outliers
        np.repeat(rng.random(n // 16) < 0.5, 16) * rng.standard_normal(n),   # zero sub-blocks
        np.eye(1, n, 77).ravel() * -5.0,                     # one value, the rest zero
        1e-6 * rng.standard_normal(n),                       # f16-subnormal scales
    ]
    return np.stack(rows).astype(np.float32)


def write_f32_model(path):
    rng = np.random.default_rng(14)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("kquant-fixture")
    w.add_context_length(64)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(1)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(VOCAB)
    w.add_file_type(0)

    def mat(rows, cols):
        return (0.05 * rng.standard_normal((rows, cols))).astype(np.float32)

    q = mat(HIDDEN, HIDDEN)
    q[:ROWS] = crafted_rows(rng)
    tensors = {
        "token_embd.weight": mat(VOCAB, HIDDEN),
        "blk.0.attn_norm.weight": np.ones(HIDDEN, np.float32),
        "blk.0.attn_q.weight": q,
        "blk.0.attn_k.weight": mat(HIDDEN, HIDDEN),
        "blk.0.attn_v.weight": mat(HIDDEN, HIDDEN),
        "blk.0.attn_output.weight": mat(HIDDEN, HIDDEN),
        "blk.0.ffn_norm.weight": np.ones(HIDDEN, np.float32),
        "blk.0.ffn_gate.weight": mat(FFN, HIDDEN),
        "blk.0.ffn_up.weight": mat(FFN, HIDDEN),
        "blk.0.ffn_down.weight": mat(HIDDEN, FFN),
        "output_norm.weight": np.ones(HIDDEN, np.float32),
        "output.weight": mat(VOCAB, HIDDEN),
    }
    for name, t in tensors.items():
        w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def ggml_dequantize(lib, type_name, raw, n):
    fn = getattr(lib, f"dequantize_row_{c_type_name(type_name)}")
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    fn.restype = None
    src = np.frombuffer(raw, dtype=np.uint8).copy()
    out = np.zeros(n, dtype=np.float32)
    fn(src.ctypes.data, out.ctypes.data, n)
    return out


# The activation type ggml multiplies each weight type with (its `vec_dot_type`).
VEC_DOT_TYPE = {"Q4_K": "Q8_K", "Q6_K": "Q8_K", "Q5_K": "Q8_K", "Q3_K": "Q8_K", "Q2_K": "Q8_K",
                "IQ4_XS": "Q8_K", "IQ4_NL": "Q8_0", "Q5_0": "Q8_0", "Q5_1": "Q8_1"}


def c_type_name(type_name):
    """ggml's C spelling: q4_K, iq4_nl, q8_K."""
    return type_name.lower()[:-2] + "_K" if type_name.endswith("_K") else type_name.lower()


def ggml_quantize_act(lib, act_type, x):
    block, block_bytes = gguf.GGML_QUANT_SIZES[T[act_type]]
    fn = getattr(lib, f"quantize_row_{c_type_name(act_type)}_ref")
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    fn.restype = None
    out = np.zeros(len(x) // block * block_bytes, dtype=np.uint8)
    fn(x.ctypes.data, out.ctypes.data, len(x))
    return out


def ggml_vec_dot(lib_cpu, type_name, act_type, row, act, n, generic=False):
    name = f"ggml_vec_dot_{c_type_name(type_name)}_{c_type_name(act_type)}" + ("_generic" if generic else "")
    fn = getattr(lib_cpu, name)
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
                   ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = None
    w = np.frombuffer(row, dtype=np.uint8).copy()
    s = np.zeros(1, dtype=np.float32)
    fn(n, s.ctypes.data, 0, w.ctypes.data, 0, act.ctypes.data, 0, 1)
    return float(s[0])


def llama_cpp_commit():
    return subprocess.run(["git", "-C", str(LLAMA_CPP), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()


# Stage `model`: Q4_K_M, and these tensors in other formats (llama-quantize --tensor-type).
KMIX_OVERRIDES = [
    r"blk\.0\.ffn_up=q5_k",
    r"blk\.0\.ffn_down=q3_k",
    r"blk\.1\.ffn_gate_exps=q2_k",
    r"blk\.1\.ffn_up_exps=iq4_xs",
    r"blk\.1\.ffn_down_shexp=iq4_xs",  # 64-wide rows: llama-quantize falls back to IQ4_NL
    r"blk\.2\.attn_kv_a_mqa=q3_k",
    r"blk\.2\.ffn_up_exps=q6_k",
    r"blk\.2\.ffn_gate_shexp=q4_1",
    r"blk\.1\.attn_q_a=q4_0",
]


def model_stage():
    from safetensors.numpy import load_file
    import collections
    if "LLAMA_CPP_LIB_PATH" not in os.environ:
        os.environ["LLAMA_CPP_LIB_PATH"] = str(LLAMA_BIN)
    from llama_cpp import Llama

    with tempfile.TemporaryDirectory() as tmp:
        f32 = Path(tmp) / "v3_quant-F32.gguf"
        subprocess.run(["cargo", "test", "-q", "-p", "deepseek-core", "--test", "kquants", "--",
                        "--ignored", "--exact", "write_v3_quant_f32_gguf"],
                       cwd=ROOT, check=True, env={**os.environ, "KQUANT_F32_GGUF": str(f32)})
        out = OUT / "v3_quant-kmix.gguf"
        cmd = [str(LLAMA_BIN / "llama-quantize"),
               "--override-kv", "tokenizer.ggml.model=str:none",
               "--override-kv", "deepseek2.vocab_size=int:512"]
        for o in KMIX_OVERRIDES:
            cmd += ["--tensor-type", o]
        subprocess.run(cmd + [str(f32), str(out), "Q4_K_M", "1"], check=True, capture_output=True)
    types = collections.Counter(t.tensor_type.name for t in gguf.GGUFReader(str(out)).tensors)
    golden = load_file(str(ROOT / "deepseek-core" / "tests" / "fixtures" / "v3_quant" / "golden.safetensors"))
    ids = [int(i) for i in np.concatenate([golden["input_ids"].ravel(), golden["greedy_ids"].ravel()])]
    llm = Llama(model_path=str(out), n_ctx=128, n_batch=128, n_ubatch=128, n_threads=2,
                n_threads_batch=2, logits_all=True, verbose=False, type_k=0, type_v=0)
    llm.eval(ids)
    logits = np.array(llm.scores[: len(ids)], dtype=np.float32)
    (OUT / "v3_quant-kmix.llama.f32").write_bytes(logits.astype("<f4").tobytes())
    print(f"kmix: {dict(types)}; llama.cpp logits {logits.shape}", flush=True)
    return {
        "file": out.name, "from": "v3_quant (our save_gguf at F32) -> llama-quantize Q4_K_M",
        "overrides": KMIX_OVERRIDES, "tensor_types": dict(types),
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "llama_logits": "v3_quant-kmix.llama.f32", "logits_shape": list(logits.shape),
        "ids": ids,
    }


QROWS, QCOLS = 64, 512
QTYPES = ["Q4_K", "Q6_K", "Q5_0", "Q8_0"]


def quantize_rows(rng):
    """QROWS rows that reach the quantizers' corners (search ties, clamps, zero scales)."""
    n = QCOLS
    g = lambda s=1.0: s * rng.standard_normal(n)
    rows = [g(), g(0.02), g(1e-3), g(30.0), rng.uniform(0.5, 1.5, n), rng.uniform(-3.0, -1.0, n),
            rng.standard_t(3, n), rng.standard_t(1.5, n) * 0.05,
            np.where(rng.random(n) < 0.03, 40.0, 1.0) * g(),
            np.repeat(rng.random(n // 16) < 0.5, 16) * g(),
            np.repeat(rng.random(n // 32) < 0.5, 32) * g(),
            np.eye(1, n, 77).ravel() * -5.0, np.eye(1, n, 300).ravel() * 3.0,
            np.zeros(n), np.full(n, 0.75), np.full(n, -2.0),
            rng.integers(-8, 9, n).astype(np.float64), rng.integers(0, 16, n).astype(np.float64) * 0.5,
            rng.integers(-32, 32, n).astype(np.float64), g(1e-6), g(1e-9), g(6e4),
            np.abs(g()), -np.abs(g(0.1)), np.linspace(-1.0, 1.0, n), np.linspace(0.0, 3.0, n),
            g() + 4.0, g(0.01) - 0.05]
    while len(rows) < QROWS:
        rows.append(g(float(np.exp(rng.uniform(-6, 1)))) + rng.uniform(-0.5, 0.5) * (rng.random() < 0.3))
    return np.stack(rows).astype(np.float32)


def crafted_rows_of_rows_stage():
    """The crafted rows stage `rows` put in blk.0.attn_q.weight (same seed, same draws)."""
    rng = np.random.default_rng(14)
    rng.standard_normal((HIDDEN, HIDDEN))  # q = mat(HIDDEN, HIDDEN) comes first
    return crafted_rows(rng)


def ggml_quantize(lib, type_name, x):
    fn = getattr(lib, f"quantize_{c_type_name(type_name)}")
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    fn.restype = ctypes.c_size_t
    block, block_bytes = gguf.GGML_QUANT_SIZES[T[type_name]]
    rows, cols = x.shape
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.zeros(rows * cols // block * block_bytes, dtype=np.uint8)
    n = fn(x.ctypes.data, out.ctypes.data, rows, cols, None)
    assert n == out.size, (type_name, n, out.size)
    return out.tobytes()


def quantize_stage():
    lib = ctypes.CDLL(str(LLAMA_BIN / "libggml-base.so"), mode=ctypes.RTLD_GLOBAL)
    crafted = crafted_rows_of_rows_stage()
    for name in ["Q4_K", "Q6_K", "Q5_0"]:
        if ggml_quantize(lib, name, crafted) != (OUT / f"{name.lower()}.bin").read_bytes():
            raise SystemExit(f"{name}: ggml's quantize_ differs from llama-quantize's bytes (or the "
                             "crafted rows were not reproduced)")
    x = quantize_rows(np.random.default_rng(16))
    (OUT / "crafted.f32").write_bytes(crafted.astype("<f4").tobytes())
    (OUT / "quantize.f32").write_bytes(x.astype("<f4").tobytes())
    entry = {"source": "ggml quantize_<type>(..., imatrix NULL) from libggml-base.so",
             "rows": QROWS, "cols": QCOLS, "llama_cpp": llama_cpp_commit(),
             "crafted_equals_llama_quantize": ["Q4_K", "Q6_K", "Q5_0"],
             "f32_sha256": hashlib.sha256(x.astype("<f4").tobytes()).hexdigest(), "types": {}}
    for name in QTYPES:
        raw = ggml_quantize(lib, name, x)
        (OUT / f"quantize.{name.lower()}.bin").write_bytes(raw)
        entry["types"][name] = hashlib.sha256(raw).hexdigest()
        print(f"quantize {name}: {len(raw)} bytes", flush=True)
    return entry


Q4KM_FIXTURES = ["v3_quant", "v2_quant"]


def write_fixture_gguf(name, dtype, path):
    subprocess.run(["cargo", "test", "-q", "-p", "deepseek-core", "--test", "kquants", "--",
                    "--ignored", "--exact", "write_fixture_gguf"], cwd=ROOT, check=True,
                   env={**os.environ, "KQUANT_FIXTURE": name, "KQUANT_DTYPE": dtype, "KQUANT_GGUF": str(path)})


def llama_logits(path, ids):
    from llama_cpp import Llama
    llm = Llama(model_path=str(path), n_ctx=128, n_batch=128, n_ubatch=128, n_threads=2,
                n_threads_batch=2, logits_all=True, verbose=False, type_k=0, type_v=0)
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def q4km_stage():
    from safetensors.numpy import load_file
    import collections
    if "LLAMA_CPP_LIB_PATH" not in os.environ:
        os.environ["LLAMA_CPP_LIB_PATH"] = str(LLAMA_BIN)
    entry = {}
    for name in Q4KM_FIXTURES:
        golden = load_file(str(ROOT / "deepseek-core" / "tests" / "fixtures" / name / "golden.safetensors"))
        ids = [int(i) for i in np.concatenate([golden["input_ids"].ravel(), golden["greedy_ids"].ravel()])]
        with tempfile.TemporaryDirectory() as tmp:
            f32 = Path(tmp) / f"{name}-F32.gguf"
            write_fixture_gguf(name, "f32", f32)
            out = OUT / f"{name}-q4_k_m.gguf"
            subprocess.run([str(LLAMA_BIN / "llama-quantize"),
                            "--override-kv", "tokenizer.ggml.model=str:none",
                            "--override-kv", "deepseek2.vocab_size=int:512",
                            str(f32), str(out), "Q4_K_M", "1"], check=True, capture_output=True)
            ours = Path(tmp) / f"{name}-ours-q4_k_m.gguf"
            write_fixture_gguf(name, "q4_k_m", ours)
            ours_logits = llama_logits(ours, ids)
        logits = llama_logits(out, ids)
        (OUT / f"{name}-q4_k_m.llama.f32").write_bytes(logits.astype("<f4").tobytes())
        (OUT / f"{name}-ours-q4_k_m.llama.f32").write_bytes(ours_logits.astype("<f4").tobytes())
        reader = gguf.GGUFReader(str(out))
        types = {t.name: t.tensor_type.name for t in reader.tensors}
        print(f"{name} Q4_K_M: {dict(collections.Counter(types.values()))}", flush=True)
        entry[name] = {"file": out.name, "from": f"{name} (our save_gguf at F32) -> llama-quantize Q4_K_M",
                       "tensor_types": types, "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
                       "llama_logits": f"{name}-q4_k_m.llama.f32",
                       "ours_llama_logits": f"{name}-ours-q4_k_m.llama.f32",
                       "logits_shape": list(logits.shape), "ids": ids}
    return entry


def main():
    stages = set(sys.argv[1:]) or {"rows", "model", "quantize", "q4km"}
    manifest_path = OUT / "manifest.json"
    if "rows" in stages:
        rows_stage()
    if "model" in stages:
        manifest = json.loads(manifest_path.read_text())
        manifest["kmix"] = model_stage()
        manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    if "quantize" in stages:
        manifest = json.loads(manifest_path.read_text())
        manifest["quantize"] = quantize_stage()
        manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    if "q4km" in stages:
        manifest = json.loads(manifest_path.read_text())
        manifest["q4_k_m"] = q4km_stage()
        manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")


def rows_stage():
    lib = ctypes.CDLL(str(LLAMA_BIN / "libggml-base.so"), mode=ctypes.RTLD_GLOBAL)
    lib_cpu = ctypes.CDLL(str(LLAMA_BIN / "libggml-cpu.so"))
    lib_cpu.ggml_cpu_init()  # fills the f16 -> f32 table the CPU kernels read
    OUT.mkdir(parents=True, exist_ok=True)
    manifest = {"source": "llama-quantize --pure of a one-layer llama F32 GGUF written by gguf-py",
                "tensor": "blk.0.attn_q.weight", "rows": ROWS, "cols": HIDDEN,
                "llama_cpp": llama_cpp_commit(), "types": {}}
    # One activation row: Gaussian with a few large values, as hidden states have.
    x = np.random.default_rng(15).standard_normal(HIDDEN).astype(np.float32)
    x[[3, 100, 200]] *= 12.0
    (OUT / "act.f32").write_bytes(x.astype("<f4").tobytes())
    acts = {}
    for act_type in ["Q8_K", "Q8_0", "Q8_1"]:
        acts[act_type] = ggml_quantize_act(lib, act_type, x)
        (OUT / f"act_{act_type.lower()}.bin").write_bytes(acts[act_type].tobytes())
    with tempfile.TemporaryDirectory() as tmp:
        f32 = Path(tmp) / "f32.gguf"
        write_f32_model(f32)
        for name in TYPES:
            out = Path(tmp) / f"{name}.gguf"
            subprocess.run([str(LLAMA_BIN / "llama-quantize"), "--pure", str(f32), str(out), name, "1"],
                           check=True, capture_output=True)
            reader = gguf.GGUFReader(str(out))
            t = next(t for t in reader.tensors if t.name == "blk.0.attn_q.weight")
            qtype = T[name]
            if t.tensor_type != qtype:
                raise SystemExit(f"{name}: llama-quantize wrote {t.tensor_type.name}")
            block, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
            row_bytes = HIDDEN // block * block_bytes
            raw = bytes(np.asarray(t.data).reshape(-1).view(np.uint8)[: ROWS * row_bytes])
            want = gguf.quants.dequantize(np.frombuffer(raw, np.uint8).reshape(ROWS, row_bytes), qtype)
            want = np.asarray(want, dtype=np.float32).reshape(-1)
            c = ggml_dequantize(lib, name, raw, ROWS * HIDDEN)
            differ = int(np.sum(want.view(np.uint32) != c.view(np.uint32)))
            if differ:
                raise SystemExit(f"{name}: gguf-py and ggml's dequantize_row differ in {differ} values")
            act_type = VEC_DOT_TYPE[name]
            dots = np.array([ggml_vec_dot(lib_cpu, name, act_type, raw[r * row_bytes:(r + 1) * row_bytes],
                                          acts[act_type], HIDDEN) for r in range(ROWS)], dtype=np.float32)
            generic = np.array([ggml_vec_dot(lib_cpu, name, act_type, raw[r * row_bytes:(r + 1) * row_bytes],
                                             acts[act_type], HIDDEN, generic=True) for r in range(ROWS)])
            scale = np.maximum(np.abs(generic), 1e-30)
            simd_vs_generic = float(np.max(np.abs(dots - generic) / scale))
            (OUT / f"{name.lower()}.dot").write_bytes(dots.astype("<f4").tobytes())
            (OUT / f"{name.lower()}.bin").write_bytes(raw)
            (OUT / f"{name.lower()}.f32").write_bytes(want.astype("<f4").tobytes())
            manifest["types"][name] = {
                "ggml_id": int(qtype), "block": block, "block_bytes": block_bytes,
                "bin_sha256": hashlib.sha256(raw).hexdigest(),
                "f32_sha256": hashlib.sha256(want.astype("<f4").tobytes()).hexdigest(),
                "ggml_c_equals_gguf_py": True,
                "dot_with": act_type,
                "dot_sha256": hashlib.sha256(dots.astype("<f4").tobytes()).hexdigest(),
                "dot_x86_vs_generic_max_rel": simd_vs_generic,
            }
            print(f"{name}: {len(raw)} bytes, {ROWS * HIDDEN} values, ggml C == gguf-py; "
                  f"dots {dots[:3]}..., x86 vs generic {simd_vs_generic:.2e}", flush=True)
    path = OUT / "manifest.json"
    for kept in ["kmix", "quantize", "q4_k_m"]:  # the other stages keep their entries
        if path.exists() and kept in json.loads(path.read_text()):
            manifest[kept] = json.loads(path.read_text())[kept]
    path.write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
