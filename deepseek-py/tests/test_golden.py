"""Logits and greedy tokens against transformers' golden outputs, through the Python API."""

import numpy as np
import pytest

from conftest import assert_close, golden, greedy, model


def test_logits_all_positions(name: str) -> None:
    g = golden(name)
    assert_close(f"{name} logits(all=True)", model(name).logits(g.all_ids, all=True), g.logits)


def test_logits_last_position(name: str) -> None:
    g = golden(name)
    got = model(name).logits(g.input_ids)
    assert got.shape == (model(name).vocab_size,)
    assert_close(f"{name} logits()", got, g.logits[len(g.input_ids) - 1])


def test_greedy_continuation(name: str) -> None:
    g = golden(name)
    s = model(name).new_session()
    assert greedy(s, g.input_ids, len(g.greedy_ids)) == g.greedy_ids.tolist()
    assert s.n_tokens == len(g.input_ids) + len(g.greedy_ids) - 1


def test_session_token_by_token(name: str) -> None:
    g = golden(name)
    s = model(name).new_session()
    for i, token in enumerate(g.all_ids):
        assert_close(f"{name} eval at position {i}", s.eval([int(token)]), g.logits[i])
        assert s.n_tokens == i + 1


def test_session_prefill_then_eval_all(name: str) -> None:
    g = golden(name)
    s = model(name).new_session()
    n = len(g.input_ids)
    assert_close(f"{name} prefill", s.eval_all(g.input_ids), g.logits[:n])
    assert_close(f"{name} eval_all after prefill", s.eval_all(g.greedy_ids), g.logits[n:])


def test_truncate_and_reset_reuse_the_cache(name: str) -> None:
    g = golden(name)
    s = model(name).new_session()
    n = len(g.input_ids)
    s.eval(g.all_ids)
    s.truncate(n)  # keep the prompt, evaluate the continuation again
    assert s.n_tokens == n
    assert_close(f"{name} after truncate", s.eval_all(g.greedy_ids), g.logits[n:])
    s.truncate(0)
    assert s.n_tokens == 0
    assert_close(f"{name} after truncate(0)", s.eval(g.input_ids), g.logits[n - 1])
    s.reset()
    assert s.n_tokens == 0
    assert_close(f"{name} after reset", s.eval_all(g.all_ids), g.logits)


@pytest.mark.parametrize("threads", [1, 2])
def test_threads_give_the_same_greedy_tokens(name: str, threads: int) -> None:
    g = golden(name)
    one = greedy(model(name, threads=1).new_session(), g.input_ids, len(g.greedy_ids))
    # A session's own pool and a model's default pool must agree with each other.
    other = greedy(
        model(name).new_session(threads=threads), g.input_ids, len(g.greedy_ids)
    )
    assert model(name, threads=1).threads == 1
    assert one == other == g.greedy_ids.tolist()


@pytest.mark.parametrize(
    "convert",
    [
        lambda a: a.tolist(),
        lambda a: tuple(a.tolist()),
        lambda a: a.astype(np.int32),
        lambda a: a.astype(np.uint16),
        lambda a: a.astype(np.uint64),
        lambda a: [np.int64(x) for x in a],
        lambda a: np.repeat(a, 2)[::2],  # a non-contiguous view
    ],
    ids=["list", "tuple", "int32", "uint16", "uint64", "numpy-scalars", "strided"],
)
def test_id_containers(convert) -> None:
    g = golden("v3_tiny")
    assert_close("ids container", model("v3_tiny").logits(convert(g.input_ids)), g.logits[6])
