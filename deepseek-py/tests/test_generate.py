"""Text generation through the Python API on v3_r1tok (a tiny random DeepSeek-V3 with R1's
vocabulary) and R1's tokenizer: transformers' greedy output, streaming, OpenAI shapes, sampling
controls, stopping, Ctrl-C and the GIL."""

import _thread
import gc
import threading
import time

import numpy as np
import pytest

import deepseek_rs
from conftest import R1_TOKENIZER, R1TOK, read_json, text_model

GOLDEN = R1TOK / "golden.json"
QUESTION = [{"role": "user", "content": "What is 1+1?"}]


def golden() -> dict:
    return read_json(GOLDEN)


# --- transformers' greedy continuation -------------------------------------------------------


def test_greedy_generation_matches_transformers() -> None:
    g, m = golden(), text_model()
    r = m.generate(g["input_ids"], max_tokens=16, temperature=0)
    assert r.tokens == g["greedy_ids"]
    assert r.finish_reason == "length"
    assert r.text == m.detokenize(g["greedy_ids"], skip_special=True)
    # The prompt ends in `<think>\n` and the random model never closes it: all reasoning.
    assert (r.reasoning_content, r.content) == (r.text.strip(), "")
    u = r.usage
    assert (u.prompt_tokens, u.cached_tokens, u.completion_tokens, u.total_tokens) == (12, 0, 16, 28)
    assert u.prefill_secs > 0 and u.decode_secs > 0 and u.decode_tok_s > 0 and u.prefill_tok_s > 0
    # The same prompt as text (it starts with BOS already), and as a numpy array.
    assert m.generate(g["prompt"], max_tokens=16, temperature=0).tokens == g["greedy_ids"]
    ids = np.array(g["input_ids"], dtype=np.int64)
    assert m.generate(ids, max_tokens=16, temperature=0).tokens == g["greedy_ids"]


def test_chat_matches_transformers_in_openai_shape() -> None:
    g, m = golden(), text_model()
    assert m.apply_chat_template(QUESTION) == g["prompt"]
    out = m.chat(QUESTION, max_tokens=16, temperature=0)
    assert set(out) == {"id", "object", "created", "model", "choices", "usage"}
    assert out["object"] == "chat.completion"
    assert out["id"].startswith("chatcmpl-") and len(out["id"]) > 20
    assert isinstance(out["created"], int) and abs(out["created"] - time.time()) < 60
    assert out["model"] == str(R1TOK)
    [choice] = out["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "length"
    message = choice["message"]
    assert set(message) == {"role", "content", "reasoning_content"}
    want = m.detokenize(g["greedy_ids"], skip_special=True).strip()
    assert message == {"role": "assistant", "content": "", "reasoning_content": want}
    usage = out["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (12, 16, 28)
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0}
    assert usage["decode_tok_s"] > 0
    assert m.chat(QUESTION, max_tokens=16, temperature=0)["id"] != out["id"]


def test_chat_stream_has_the_openai_delta_shape() -> None:
    m = text_model()
    whole = m.chat(QUESTION, max_tokens=16, temperature=0)
    chunks = list(m.chat(QUESTION, max_tokens=16, temperature=0, stream=True))
    assert len(chunks) >= 3
    for c in chunks:
        assert c["object"] == "chat.completion.chunk"
        assert (c["id"], c["created"], c["model"]) == (
            chunks[0]["id"], chunks[0]["created"], chunks[0]["model"])
        assert len(c["choices"]) == 1 and c["choices"][0]["index"] == 0
    first, *middle, last = [c["choices"][0] for c in chunks]
    assert first["delta"] == {"role": "assistant"} and first["finish_reason"] is None
    for choice in middle:
        [(key, text)] = choice["delta"].items()
        assert key in ("content", "reasoning_content") and text
        assert choice["finish_reason"] is None
    assert last["delta"] == {} and last["finish_reason"] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 16
    joined = {"content": "", "reasoning_content": ""}
    for choice in middle:
        for key, text in choice["delta"].items():
            joined[key] += text
    message = whole["choices"][0]["message"]
    assert joined == {"content": "", "reasoning_content": message["reasoning_content"]}


# --- streaming -------------------------------------------------------------------------------


def test_stream_concatenates_to_the_result() -> None:
    m = text_model()
    prompt = golden()["prompt"]
    whole = m.generate(prompt, max_tokens=16, temperature=0)
    s = m.generate(prompt, max_tokens=16, temperature=0, stream=True)
    assert iter(s) is s and s.result is None
    chunks = list(s)
    assert chunks and all(c.kind == "reasoning" and c.text for c in chunks)
    assert "".join(c.text for c in chunks) == whole.reasoning_content
    r = s.result
    assert (r.tokens, r.text, r.finish_reason) == (whole.tokens, whole.text, "length")
    assert s.result is r
    assert list(s) == []


@pytest.mark.parametrize("seed", range(4))
def test_sampled_stream_equals_sampled_result(seed: int) -> None:
    # High temperature: arbitrary tokens, split characters; deltas still join to the text.
    m = text_model()
    kw = dict(max_tokens=24, temperature=1.5, seed=seed)
    whole = m.generate("Tell me a story.", **kw)
    s = m.generate("Tell me a story.", stream=True, **kw)
    chunks = list(s)
    assert all(c.kind == "content" for c in chunks)
    assert "".join(c.text for c in chunks) == whole.content == whole.text
    assert s.result.tokens == whole.tokens
    assert whole.text == m.detokenize([t for t in whole.tokens if t != 1], skip_special=True)
    assert all(t < m.tokenizer.vocab_size for t in whole.tokens), "padding ids sampled"


def test_seeds_are_reproducible() -> None:
    m = text_model()
    a = m.generate("Once upon a time", max_tokens=12, seed=7)
    b = m.generate("Once upon a time", max_tokens=12, seed=7)
    c = m.generate("Once upon a time", max_tokens=12, seed=8)
    assert (a.tokens, a.text) == (b.tokens, b.text)
    assert a.tokens != c.tokens
    assert len(a.tokens) == 12
    big = m.generate("Once upon a time", max_tokens=4, seed=2**64 - 1, top_k=50, min_p=0.01)
    assert len(big.tokens) == 4


def test_sampling_controls_change_the_choice() -> None:
    m = text_model()
    greedy = m.generate("Once upon a time", max_tokens=1, temperature=0)
    first = greedy.tokens[0]
    banned = m.generate("Once upon a time", max_tokens=1, temperature=0, logit_bias={first: float("-inf")})
    assert banned.tokens[0] != first
    # OpenAI's JSON form: ids as strings.
    assert m.generate("hi", max_tokens=1, temperature=0, logit_bias={"1000": 100.0}).tokens == [1000]
    # top_k=1 is greedy whatever the temperature.
    assert m.generate("Once upon a time", max_tokens=5, temperature=2.0, top_k=1, seed=3).tokens == (
        m.generate("Once upon a time", max_tokens=5, temperature=0).tokens
    )
    # A huge presence penalty forbids repeating a generated token.
    r = m.generate("Once upon a time", max_tokens=12, temperature=0, presence_penalty=2.0,
                   frequency_penalty=2.0, repetition_penalty=1.3)
    assert len(r.tokens) == 12


def test_stop_strings_end_generation() -> None:
    m = text_model()
    free = m.generate("Once upon a time", max_tokens=16, temperature=0)
    mid = len(free.text) // 2
    stop = free.text[mid:mid + 2]
    at = free.text.find(stop)
    for given in (stop, [stop], ["never-seen", stop]):
        r = m.generate("Once upon a time", max_tokens=16, temperature=0, stop=given)
        assert r.finish_reason == "stop"
        assert r.text == r.content == free.text[:at]
        assert r.tokens == free.tokens[:len(r.tokens)] and len(r.tokens) < len(free.tokens)
        s = m.generate("Once upon a time", max_tokens=16, temperature=0, stop=given, stream=True)
        assert "".join(c.text for c in s) == free.text[:at]


def test_max_tokens_and_eos_finish() -> None:
    m = text_model()
    r = m.generate("hi", max_tokens=3, temperature=0)
    assert (r.finish_reason, len(r.tokens)) == ("length", 3)
    eos = m.chat([{"role": "user", "content": "hi"}], max_tokens=5, temperature=0, logit_bias={1: 1e4})
    assert eos["choices"][0]["finish_reason"] == "stop"
    assert eos["choices"][0]["message"]["reasoning_content"] == ""
    r = m.generate("hi", max_tokens=5, temperature=0, logit_bias={1: 1e4})
    assert (r.tokens, r.text, r.finish_reason) == ([1], "", "stop")
    # A context that fills up ends with "length" too.
    small = deepseek_rs.Model(R1TOK, tokenizer=R1_TOKENIZER, context_length=8)
    r = small.generate("hi", temperature=0, logit_bias={1: float("-inf")})
    # The last sampled token need not fit in the cache: context - prompt + 1 tokens.
    assert (r.finish_reason, len(r.tokens)) == ("length", 8 - 2 + 1)


def test_threads_give_the_same_greedy_text() -> None:
    one = text_model(threads=1).chat(QUESTION, max_tokens=16, temperature=0)
    two = text_model(threads=2).chat(QUESTION, max_tokens=16, temperature=0)
    assert one["choices"] == two["choices"]


# --- streams that end early ------------------------------------------------------------------


def test_dropping_a_stream_early_then_generating_again() -> None:
    m = text_model()
    want = m.generate("Once upon a time", max_tokens=8, temperature=0)
    for _ in range(3):
        s = m.generate("Once upon a time", max_tokens=8, temperature=0, stream=True)
        next(s)
        del s
        c = m.chat(QUESTION, max_tokens=8, temperature=0, stream=True)
        next(c), next(c)
        del c
        gc.collect()
    assert m.generate("Once upon a time", max_tokens=8, temperature=0).tokens == want.tokens


def test_close_cancels_a_stream() -> None:
    m = text_model()
    s = m.generate("Once upon a time", max_tokens=8, temperature=0, stream=True)
    first = next(s)
    s.close()
    assert list(s) == []
    assert s.result.finish_reason == "cancelled"
    assert s.result.text.startswith(first.text) and len(s.result.tokens) < 8
    c = m.chat(QUESTION, max_tokens=8, temperature=0, stream=True)
    next(c)
    c.close()
    assert list(c) == []


def test_ctrl_c_interrupts_generation_between_tokens() -> None:
    # EOS banned, no max_tokens: the model would run to its 1024-token context.
    m = text_model()
    timer = threading.Timer(0.2, _thread.interrupt_main)
    start = time.perf_counter()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            m.generate("Once upon a time", temperature=0, logit_bias={1: float("-inf")})
    finally:
        timer.cancel()
    elapsed = time.perf_counter() - start
    full = m.generate("Once upon a time", max_tokens=64, temperature=0, logit_bias={1: float("-inf")})
    per_token = full.usage.decode_secs / 63
    assert elapsed < 0.2 + 0.5 + 50 * per_token, f"stopped after {elapsed:.2f}s"
    assert elapsed < 1000 * per_token, "generation ran to the end"
    # The model is fine afterwards.
    assert m.generate("Once upon a time", max_tokens=4, temperature=0).tokens == full.tokens[:4]


def test_generation_releases_the_gil() -> None:
    m = text_model(threads=1)
    span = {}

    def work() -> None:
        span["start"] = time.perf_counter()
        m.generate("Once upon a time", max_tokens=200, temperature=0, logit_bias={1: float("-inf")})
        span["end"] = time.perf_counter()

    ticks = []
    worker = threading.Thread(target=work)
    worker.start()
    while worker.is_alive():
        ticks.append(time.perf_counter())
    worker.join()
    start, end = span["start"], span["end"]
    margin = 0.1 * (end - start)
    assert end - start > 0.02, "generation too short to tell"
    inside = [t for t in ticks if start + margin < t < end - margin]
    assert len(inside) > 100, f"Python barely ran during a {end - start:.3f}s generation"
