"""Shared fixtures: the committed golden models of deepseek-core, loaded once per test run."""

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
from safetensors.numpy import load_file

import deepseek_rs

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "deepseek-core" / "tests" / "fixtures"
NAMES = sorted(p.parent.name for p in FIXTURES.glob("*/golden.safetensors"))
if not NAMES:
    raise RuntimeError(f"no golden fixtures under {FIXTURES}")

# transformers (float32) vs us, every position of every fixture.
ATOL = 1e-3


@dataclass
class Golden:
    """One fixture folder and its transformers reference."""

    name: str
    path: Path
    input_ids: np.ndarray  # int64 [7]
    greedy_ids: np.ndarray  # int64 [16]: transformers' greedy continuation
    logits: np.ndarray  # float32 [23, V] over input_ids + greedy_ids

    @property
    def all_ids(self) -> np.ndarray:
        return np.concatenate([self.input_ids, self.greedy_ids])


@lru_cache(maxsize=None)
def golden(name: str) -> Golden:
    path = FIXTURES / name
    g: Dict[str, np.ndarray] = load_file(str(path / "golden.safetensors"))
    return Golden(name, path, g["input_ids"], g["greedy_ids"], g["logits"])


@lru_cache(maxsize=None)
def model(name: str, threads: int = 2) -> deepseek_rs.Model:
    return deepseek_rs.Model(FIXTURES / name, threads=threads)


# The generation fixture: a tiny random DeepSeek-V3 with R1's vocabulary (no tokenizer files
# of its own) and R1's real tokenizer; golden.json holds transformers' greedy chat continuation.
R1TOK = FIXTURES / "v3_r1tok"
TOKENIZERS = FIXTURES / "tokenizers"
R1_TOKENIZER = TOKENIZERS / "deepseek-r1"


@lru_cache(maxsize=None)
def text_model(threads: int = 2) -> deepseek_rs.Model:
    """v3_r1tok with the R1 tokenizer (and its generation_config.json: temperature 0.6, top-p 0.95)."""
    return deepseek_rs.Model(R1TOK, threads=threads, tokenizer=R1_TOKENIZER)


@lru_cache(maxsize=None)
def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(params=NAMES)
def name(request: pytest.FixtureRequest) -> str:
    """Each fixture's name in turn."""
    return request.param


def assert_close(what: str, got: np.ndarray, want: np.ndarray, atol: float = ATOL) -> None:
    """Fails naming the first position that differs, its first values and the max difference."""
    assert got.dtype == np.float32, f"{what}: dtype {got.dtype}"
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    diff = np.abs(got.astype(np.float64) - want)
    bad = np.argwhere(diff > atol)
    if len(bad):
        first = tuple(int(i) for i in bad[0])
        row = first[:-1]
        raise AssertionError(
            f"{what}: {len(bad)} values differ by more than {atol}; first at {first}, "
            f"max diff {diff.max():.3g}\n  got  {got[row][:6]}\n  want {want[row][:6]}"
        )


def greedy(session: deepseek_rs.Session, prompt: np.ndarray, n: int) -> list:
    """Argmax decoding of n tokens, one eval per token."""
    out = [int(np.argmax(session.eval(prompt)))]
    while len(out) < n:
        out.append(int(np.argmax(session.eval([out[-1]]))))
    return out
