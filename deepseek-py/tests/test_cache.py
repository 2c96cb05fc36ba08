"""KV cache formats, session state files and forks from Python: the same exactness as the Rust
tests (a restored or forked session continues with the original's logits), the accuracy bars of
each format against transformers, and typed errors for bad files and values."""

import numpy as np
import pytest

import deepseek_rs
from conftest import FIXTURES, R1_TOKENIZER, R1TOK, golden, model, read_json, text_model


def test_cache_dtype_sets_bytes_per_token_and_is_validated() -> None:
    m = model("v3_tiny")
    # (kv_lora_rank 32 + qk_rope_head_dim 8) x 3 layers; q8_0 pads each part to 32 values.
    sizes = {"f32": 40 * 4 * 3, "bf16": 40 * 2 * 3, "q8_0": 2 * 34 * 3}
    for dtype, per_token in sizes.items():
        s = m.new_session(cache_dtype=dtype)
        assert (s.cache_dtype, s.cache_bytes_per_token) == (dtype, per_token)
    assert m.new_session().cache_dtype == "f32"
    assert deepseek_rs.Model(FIXTURES / "v3_tiny", cache_dtype="bf16").new_session().cache_dtype == "bf16"
    with pytest.raises(deepseek_rs.DeepseekValueError, match="cache_dtype"):
        m.new_session(cache_dtype="f16")
    with pytest.raises(deepseek_rs.DeepseekValueError, match="cache_dtype"):
        deepseek_rs.Model(FIXTURES / "v3_tiny", cache_dtype="int4")


@pytest.mark.parametrize("dtype", ["bf16", "q8_0"])
def test_smaller_caches_keep_the_reference_logits(dtype: str) -> None:
    g = golden("v3_quant")
    logits = model("v3_quant").new_session(cache_dtype=dtype).eval_all(g.all_ids)
    cos = (logits * g.logits).sum(1) / np.linalg.norm(logits, axis=1) / np.linalg.norm(g.logits, axis=1)
    assert cos.min() >= (0.9999 if dtype == "bf16" else 0.999), cos.min()


@pytest.mark.parametrize("dtype", ["f32", "bf16", "q8_0"])
def test_saved_restored_and_forked_sessions_continue_exactly(tmp_path, dtype: str) -> None:
    m = model("v3_tiny")
    ids = golden("v3_tiny").all_ids
    a = m.new_session(cache_dtype=dtype)
    a.eval(ids[:10])
    path = tmp_path / "state.dss"
    a.save(path)
    b = m.load_session(path)
    f = a.fork()
    assert b.tokens() == f.tokens() == a.tokens() == [int(i) for i in ids[:10]]
    assert b.cache_dtype == dtype
    want = a.eval_all(ids[10:])
    np.testing.assert_array_equal(b.eval_all(ids[10:]), want)
    np.testing.assert_array_equal(f.eval_all(ids[10:]), want)
    assert a.n_tokens == b.n_tokens == f.n_tokens == len(ids)


def test_bad_state_files_raise_session_state_errors(tmp_path) -> None:
    m = model("v3_tiny")
    s = m.new_session()
    s.eval([3, 4, 5])
    path = tmp_path / "state.dss"
    s.save(path)
    with pytest.raises(deepseek_rs.DeepseekSessionStateError, match="another model"):
        model("v2_lite_tiny").load_session(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(deepseek_rs.DeepseekSessionStateError, match="checksum"):
        m.load_session(path)
    path.write_bytes(bytes(data[:20]))
    with pytest.raises(deepseek_rs.DeepseekSessionStateError):
        m.load_session(path)
    with pytest.raises(deepseek_rs.DeepseekFileNotFoundError):
        m.load_session(tmp_path / "missing.dss")
    s.save(path)
    with pytest.raises(deepseek_rs.DeepseekContextOverflowError):
        m.load_session(path, context_length=2)


@pytest.mark.parametrize("dtype", ["bf16", "q8_0"])
def test_generate_chat_and_chat_sessions_take_the_cache_dtype(dtype: str) -> None:
    # transformers' greedy continuation (float32 everywhere) survives a smaller cache.
    g = read_json(R1TOK / "golden.json")
    m = deepseek_rs.Model(R1TOK, threads=2, tokenizer=R1_TOKENIZER, cache_dtype=dtype)
    assert m.new_session().cache_dtype == dtype
    assert m.generate(g["input_ids"], max_tokens=16, temperature=0).tokens == g["greedy_ids"]
    want = m.detokenize(g["greedy_ids"], skip_special=True).strip()
    question = [{"role": "user", "content": "What is 1+1?"}]
    out = m.chat(question, max_tokens=16, temperature=0)
    assert out["choices"][0]["message"]["reasoning_content"] == want
    chat = deepseek_rs.ChatSession(text_model(), cache_dtype=dtype)
    assert chat.send("What is 1+1?", max_tokens=16, temperature=0).tokens == g["greedy_ids"]
    with pytest.raises(deepseek_rs.DeepseekValueError, match="cache_dtype"):
        deepseek_rs.ChatSession(text_model(), cache_dtype="f16")
