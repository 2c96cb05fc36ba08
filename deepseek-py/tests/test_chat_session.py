"""ChatSession: multi-turn chat that keeps its KV cache, streamed or not."""

import _thread
import gc
import threading

import pytest

import deepseek_rs
from conftest import R1TOK, text_model

SYSTEM = "You are a helpful assistant. Be brief and precise."


def greedy(n: int) -> dict:
    return dict(max_tokens=n, temperature=0)


def test_chat_session_reuses_the_cache() -> None:
    m = text_model()
    chat = deepseek_rs.ChatSession(m, system=SYSTEM)
    assert chat.model is m and chat.system == SYSTEM
    assert chat.messages == [{"role": "system", "content": SYSTEM}]
    assert chat.n_tokens == 0

    r1 = chat.send("What is 1+1?", **greedy(6))
    assert isinstance(r1, deepseek_rs.GenerationResult)
    assert r1.usage.cached_tokens == 0
    assert chat.n_tokens == r1.usage.prompt_tokens + 5, "all but the last token cached"
    assert [msg["role"] for msg in chat.messages] == ["system", "user", "assistant"]
    assert chat.messages[2]["reasoning_content"] == r1.reasoning_content
    assert chat.messages[2]["content"] == r1.content

    history = chat.messages + [{"role": "user", "content": "And 2+2?"}]
    prompt2 = m.tokenize(m.apply_chat_template(history), add_special=False)
    r2 = chat.send("And 2+2?", **greedy(6))
    assert r2.usage.prompt_tokens == len(prompt2)
    # R1's template drops the reply's reasoning: the cache is reused up to `<｜Assistant｜>`.
    assert r2.usage.cached_tokens >= r1.usage.prompt_tokens - 2
    assert r2.usage.prompt_tokens - r2.usage.cached_tokens < r2.usage.prompt_tokens / 2
    # The same reply as answering the whole conversation from an empty cache.
    assert r2.tokens == m.generate(prompt2, **greedy(6)).tokens
    assert len(chat.messages) == 5

    chat.reset()
    assert chat.messages == [{"role": "system", "content": SYSTEM}]
    assert chat.n_tokens == 0
    r3 = chat.send("What is 1+1?", **greedy(6))
    assert r3.usage.cached_tokens == 0 and r3.tokens == r1.tokens
    assert "ChatSession(messages=3" in repr(chat)


def test_streamed_reply_joins_the_conversation() -> None:
    m = text_model()
    plain = deepseek_rs.ChatSession(m)
    streamed = deepseek_rs.ChatSession(m)
    for text in ("Hello", "Tell me more."):
        want = plain.send(text, **greedy(8))
        s = streamed.send(text, stream=True, **greedy(8))
        assert isinstance(s, deepseek_rs.GenerationStream)
        chunks = list(s)
        assert "".join(c.text for c in chunks if c.kind == "reasoning") == want.reasoning_content
        assert s.result.tokens == want.tokens
        assert s.result.usage.cached_tokens == want.usage.cached_tokens
        assert streamed.messages == plain.messages


def test_a_dropped_stream_gives_the_session_back() -> None:
    chat = deepseek_rs.ChatSession(text_model())
    s = chat.send("Hello", stream=True, **greedy(8))
    next(s)
    with pytest.raises(RuntimeError, match="busy"):
        chat.send("again")
    with pytest.raises(RuntimeError, match="busy"):
        chat.messages
    assert repr(chat) == "ChatSession(busy)"
    del s
    gc.collect()
    # The partial reply is part of the conversation, and the cache matches it.
    assert [m["role"] for m in chat.messages] == ["user", "assistant"]
    r = chat.send("And then?", **greedy(4))
    assert r.usage.cached_tokens > 0
    # close() does the same without waiting for the garbage collector.
    s = chat.send("More", stream=True, **greedy(8))
    next(s)
    s.close()
    assert s.result.finish_reason == "cancelled"
    assert len(chat.messages) == 6


def test_rejected_requests_leave_the_conversation_alone() -> None:
    chat = deepseek_rs.ChatSession(text_model(), system=SYSTEM)
    chat.send("Hi", **greedy(3))
    before = (chat.messages, chat.n_tokens)
    with pytest.raises(ValueError, match="temperature"):
        chat.send("x", temperature=-1)
    with pytest.raises(ValueError, match="max_tokens"):
        chat.send("x", max_tokens=0)
    assert (chat.messages, chat.n_tokens) == before
    small = deepseek_rs.ChatSession(text_model(), system=SYSTEM, context_length=32, threads=1)
    with pytest.raises(ValueError, match="context overflow"):
        small.send("word " * 40, **greedy(2))
    assert small.messages == [{"role": "system", "content": SYSTEM}]
    assert small.send("Hi", **greedy(2)).finish_reason == "length"


def test_chat_session_needs_a_tokenizer() -> None:
    with pytest.raises(ValueError, match="tokenizer="):
        deepseek_rs.ChatSession(deepseek_rs.Model(R1TOK))
    with pytest.raises(ValueError, match="context_length"):
        deepseek_rs.ChatSession(text_model(), context_length=0)


def test_ctrl_c_keeps_the_partial_reply() -> None:
    chat = deepseek_rs.ChatSession(text_model())
    timer = threading.Timer(0.2, _thread.interrupt_main)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            chat.send("Hello", temperature=0, logit_bias={1: float("-inf")})
    finally:
        timer.cancel()
    [user, reply] = chat.messages
    assert user == {"role": "user", "content": "Hello"}
    assert reply["role"] == "assistant" and reply["reasoning_content"]
    assert chat.send("Go on", **greedy(2)).usage.cached_tokens > 0
