"""Tokenizer and chat template against transformers (the committed corpus and template cases of
deepseek-core), standalone and through a Model."""

from functools import lru_cache

import numpy as np
import pytest

import deepseek_rs
from conftest import FIXTURES, R1_TOKENIZER, TOKENIZERS, read_json, text_model

CORPUS = TOKENIZERS / "corpus.json"
CASES = FIXTURES / "templates" / "cases.json"
NAMES = ["deepseek-r1", "deepseek-r1-distill-qwen-7b"]


@lru_cache(maxsize=None)
def tokenizer(name: str) -> deepseek_rs.Tokenizer:
    return deepseek_rs.Tokenizer.from_pretrained(TOKENIZERS / name)


@pytest.mark.parametrize("name", NAMES)
def test_corpus_matches_transformers(name: str) -> None:
    corpus = read_json(CORPUS)
    want = corpus["expected"][name]
    tok = tokenizer(name)
    assert len(corpus["strings"]) >= 25
    for i, s in enumerate(corpus["strings"]):
        assert tok.encode(s) == want["ids"][i], f"{name}: encode({s!r})"
        assert tok.encode(s, add_special=True) == want["ids_add_special"][i], s
        assert tok.decode(want["ids"][i]) == want["decoded"][i], s
        assert tok.decode(want["ids"][i], skip_special=True) == want["decoded_skip_special"][i], s


def template_cases() -> list:
    return read_json(CASES)["cases"]


@pytest.mark.parametrize(
    "case", template_cases(), ids=[f"{c['tokenizer']}/{c['name']}" for c in template_cases()]
)
def test_chat_template_matches_transformers(case: dict) -> None:
    tok = tokenizer(case["tokenizer"])
    text = tok.apply_chat_template(case["messages"], add_generation_prompt=case["add_generation_prompt"])
    assert text == case["text"]
    assert tok.encode(text) == case["ids"]
    if case["tokenizer"] == "deepseek-r1":
        # The model renders and tokenizes the same way (its tokenizer is R1's).
        m = text_model()
        agp = case["add_generation_prompt"]
        assert m.apply_chat_template(case["messages"], add_generation_prompt=agp) == case["text"]
        assert m.tokenize(case["text"], add_special=False) == case["ids"]


def test_r1_special_tokens() -> None:
    tok = tokenizer("deepseek-r1")
    assert tok.vocab_size == 128815
    assert (tok.bos_token_id, tok.eos_token_id) == (0, 1)
    assert tok.token_to_id("<think>") == 128798
    assert tok.token_to_id("</think>") == 128799
    assert tok.token_to_id("no such token") is None
    assert tok.id_to_token(128804) == "<｜Assistant｜>"
    assert tok.id_to_token(-1) is None and tok.id_to_token(10**9) is None
    assert "<｜Assistant｜>" in tok.chat_template
    assert "vocab_size=128815" in repr(tok)
    text = "<｜begin▁of▁sentence｜><｜User｜>Hello, world! 12345 你好<｜Assistant｜><think>\n"
    ids = [0, 128803, 19923, 14, 2058, 3, 223, 6895, 1883, 223, 30594, 128804, 128798, 201]
    assert tok.encode(text) == ids
    assert tok.decode(np.array(ids, dtype=np.int32)) == text
    assert tok.decode(ids, skip_special=True) == "<｜User｜>Hello, world! 12345 你好<｜Assistant｜><think>\n"


def test_model_text_methods() -> None:
    m = text_model()
    assert isinstance(m.tokenizer, deepseek_rs.Tokenizer)
    assert m.tokenizer is m.tokenizer
    # tokenize is what generate evaluates: BOS first (add_bos_token), not doubled.
    assert m.tokenize("hi") == [0, 6366]
    assert m.tokenize("<｜begin▁of▁sentence｜>hi") == [0, 6366]
    assert m.tokenize("hi", add_special=False) == [6366] == m.tokenizer.encode("hi")
    assert m.detokenize([0, 6366]) == "<｜begin▁of▁sentence｜>hi"
    assert m.detokenize([0, 6366], skip_special=True) == "hi"


def test_tokenizer_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        deepseek_rs.Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"not": "a tokenizer"}')
    with pytest.raises(deepseek_rs.DeepseekError, match="tokenizer.json"):
        deepseek_rs.Tokenizer.from_pretrained(tmp_path)
    tok = tokenizer("deepseek-r1")
    with pytest.raises(ValueError, match="200000"):
        tok.decode([200000])
    with pytest.raises(ValueError, match="negative"):
        tok.decode([-1])
    with pytest.raises(ValueError, match="empty conversation"):
        tok.apply_chat_template([])
    # Without tokenizer_config.json: no template of its own, R1's is used.
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "tokenizer.json").symlink_to(R1_TOKENIZER / "tokenizer.json")
    t = deepseek_rs.Tokenizer.from_pretrained(bare)
    assert t.bos_token_id is None
    assert t.apply_chat_template([{"role": "user", "content": "hi"}]) == (
        "<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜><think>\n"
    )
