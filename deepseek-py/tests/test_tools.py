"""Agents through Python: tools in, OpenAI tool calls out (whole and streamed), forced calls,
structured output validated by an independent JSON Schema validator where one is installed,
the reasoning budget, template kwargs, and typed errors for bad tools, choices and schemas.

The model is v3_r1tok (tiny, random, R1's vocabulary and template): its text is noise, so what
these tests check is what the grammar and the parser guarantee whatever the model says."""

import json
from functools import lru_cache

import jsonschema  # an independent validator (installed by .ci/python.sh)
import numpy as np
import pytest

import deepseek_rs
from conftest import FIXTURES, read_json, text_model

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 8},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
ASK = [{"role": "user", "content": "Weather in Paris?"}]


def forced(**kw):
    # The random fixture would reason forever: no reasoning, straight to the answer.
    return text_model().chat(
        ASK, tools=[WEATHER], tool_choice="required", max_reasoning_tokens=0,
        temperature=0, max_tokens=80, **kw,
    )


def test_forced_call_has_the_openai_shape() -> None:
    out = forced()
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    (call,) = message["tool_calls"]
    assert set(call) == {"id", "type", "function"}
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    args = json.loads(call["function"]["arguments"])
    assert set(args) <= {"city", "unit"} and "city" in args
    assert len(args["city"]) <= 8
    assert message["content"] is None or "｜" not in message["content"]


def test_streamed_tool_call_deltas_add_up_to_the_whole() -> None:
    whole = forced()["choices"][0]["message"]["tool_calls"]
    chunks = list(forced(stream=True))
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    calls: list = []
    for c in chunks:
        delta = c["choices"][0]["delta"]
        assert "｜" not in (delta.get("content") or "")
        for d in delta.get("tool_calls", []):
            if "id" in d:
                assert d["index"] == len(calls) and d["type"] == "function"
                calls.append({"id": d["id"], "type": "function",
                              "function": {"name": d["function"]["name"], "arguments": ""}})
            calls[d["index"]]["function"]["arguments"] += d["function"]["arguments"]
    # Ids are fresh per reply; everything else is the same.
    for c in calls + whole:
        c.pop("id")
    assert calls == whole


def test_a_named_function_is_forced_and_results_go_back() -> None:
    m = text_model()
    second = dict(WEATHER, function=dict(WEATHER["function"], name="get_time",
                                         parameters={"type": "object", "properties": {}}))
    out = m.chat(ASK, tools=[WEATHER, second], max_reasoning_tokens=0, temperature=0,
                 tool_choice={"type": "function", "function": {"name": "get_time"}},
                 max_tokens=40)
    message = out["choices"][0]["message"]
    assert [c["function"]["name"] for c in message["tool_calls"]] == ["get_time"]
    # The round trip: the assistant turn with its calls, then the result naming the call.
    turn = ASK + [
        {"role": "assistant", "content": None, "tool_calls": message["tool_calls"]},
        {"role": "tool", "tool_call_id": message["tool_calls"][0]["id"], "content": "12:00"},
    ]
    out2 = m.chat(turn, tools=[WEATHER, second], max_tokens=4, temperature=0)
    assert out2["choices"][0]["finish_reason"] in ("stop", "length", "tool_calls")
    assert out2["usage"]["prompt_tokens"] > out["usage"]["prompt_tokens"]


def test_tool_choice_none_never_calls() -> None:
    # Even pushed towards the opening marker, the model cannot write it.
    m = text_model()
    begin = m.tokenizer.token_to_id("<｜tool▁calls▁begin｜>")
    assert begin is not None
    out = m.chat(ASK, tools=[WEATHER], tool_choice="none", temperature=0, max_tokens=8,
                 max_reasoning_tokens=0, logit_bias={begin: 100.0})
    message = out["choices"][0]["message"]
    assert "tool_calls" not in message
    assert out["choices"][0]["finish_reason"] != "tool_calls"


SCHEMAS = read_json(FIXTURES / "structured" / "schemas.json")["schemas"]


@lru_cache(maxsize=None)
def closing_bias() -> dict:
    """Like a real model, lean towards closing what was opened (tokens with `"`, `}` or `]`),
    or the random fixture fills unbounded schemas until max_tokens."""
    tok = text_model().tokenizer
    return {i: 4.0 for i in range(tok.vocab_size)
            if any(c in (tok.decode([i]) or "") for c in '"}]')}


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_json_schema_answers_parse_and_validate(name: str) -> None:
    schema = SCHEMAS[name]
    for seed in range(2):
        out = text_model().chat(
            ASK, max_reasoning_tokens=0, seed=seed, temperature=1.0, max_tokens=400,
            logit_bias=closing_bias(),
            response_format={"type": "json_schema", "json_schema": {"name": name, "schema": schema}},
        )
        choice = out["choices"][0]
        assert choice["finish_reason"] == "stop", choice
        jsonschema.validate(json.loads(choice["message"]["content"]), schema)


def test_json_object_answers_parse() -> None:
    out = text_model().chat(ASK, max_reasoning_tokens=0, temperature=0, max_tokens=400,
                            logit_bias=closing_bias(), response_format={"type": "json_object"})
    assert isinstance(json.loads(out["choices"][0]["message"]["content"]), dict)


def test_reasoning_budget_forces_the_answer() -> None:
    # R1's template opens <think>; the random model would not close it by itself.
    out = text_model().chat(ASK, max_reasoning_tokens=5, temperature=0, max_tokens=20)
    usage, message = out["usage"], out["choices"][0]["message"]
    assert message["reasoning_content"] is not None
    assert usage["completion_tokens"] > 5
    free = text_model().chat(ASK, temperature=0, max_tokens=20)["choices"][0]["message"]
    assert free["content"] == ""  # still reasoning after 20 tokens without a budget
    assert message["content"] != ""


def test_template_kwargs_reach_the_template() -> None:
    # R1's template ignores unknown variables; kwargs may not replace the render's own inputs.
    m = text_model()
    a = m.chat(ASK, chat_template_kwargs={"thinking": False}, temperature=0, max_tokens=2)
    assert a["usage"]["prompt_tokens"] == m.chat(ASK, temperature=0, max_tokens=2)["usage"]["prompt_tokens"]
    with pytest.raises(deepseek_rs.DeepseekValueError, match="chat_template_kwargs"):
        m.chat(ASK, chat_template_kwargs={"messages": []}, max_tokens=1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"tools": {"type": "function"}}, "tools must be a list"),
        ({"tools": [{"type": "function"}]}, r"tools\[0\]"),
        ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "whitespace"),
        ({"tools": [WEATHER, WEATHER]}, "appears twice"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": 3}}]}, "parameters"),
        ({"tools": [object()]}, "tools is not JSON"),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
         "no tool named"),
        ({"tool_choice": "required"}, "no tools were given"),
        ({"response_format": {"type": "xml"}}, "unknown type"),
        ({"response_format": {"type": "json_schema"}}, "json_schema needs"),
        ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "nonsense"}}}},
         "response_format"),
        ({"response_format": {"type": "regex", "regex": "("}}, "response_format"),
        ({"max_reasoning_tokens": -1}, "max_reasoning_tokens"),
        ({"chat_template_kwargs": [1]}, "chat_template_kwargs must be a dict"),
        ({"chat_template_kwargs": {"x": float("nan")}}, "not JSON"),
    ],
)
def test_bad_agent_arguments_are_typed_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(deepseek_rs.DeepseekValueError, match=match):
        text_model().chat(ASK, max_tokens=1, **kwargs)


def test_bad_tool_calls_in_messages_name_the_message() -> None:
    bad = ASK + [{"role": "assistant", "content": None, "tool_calls": [{"function": {}}]}]
    with pytest.raises(deepseek_rs.DeepseekValueError, match=r"messages\[1\]\[\"tool_calls\"\]\[0\]"):
        text_model().chat(bad, max_tokens=1)


def test_chat_session_keeps_the_calls() -> None:
    s = deepseek_rs.ChatSession(text_model())
    r = s.send("Weather in Paris?", tools=[WEATHER], tool_choice="required",
               max_reasoning_tokens=0, temperature=0, max_tokens=80)
    assert r.finish_reason == "tool_calls"
    (call,) = r.tool_calls
    assert s.messages[-1]["tool_calls"] == [call]


def test_the_tools_example_runs_on_r1_nano() -> None:
    # examples/python/tools.py: a forced call streamed and whole, the tool's result sent back,
    # and a JSON-schema answer, on r1-nano (its asserts check the shapes).
    import subprocess
    import sys

    from conftest import ROOT

    run = subprocess.run([sys.executable, str(ROOT / "examples" / "python" / "tools.py")],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "[finish_reason: tool_calls]" in run.stdout
    assert "json_schema answer: {" in run.stdout


def test_logits_processors_decide_the_token() -> None:
    m = text_model()
    only = m.tokenizer.encode(" yes", False)[0]
    seen = []

    def allow_only(generated, logits):
        seen.append(list(generated))
        assert logits.dtype == np.float32 and logits.shape == (m.tokenizer.vocab_size,)
        logits[:] = -np.inf
        logits[only] = 0.0  # in place

    out = m.chat(ASK, logits_processors=[allow_only], temperature=0, max_tokens=3)
    # (the reasoning is reported without its leading whitespace)
    assert out["choices"][0]["message"]["reasoning_content"] == "yes yes yes"
    assert [len(g) for g in seen] == [0, 1, 2] and seen[2] == [only, only]

    def returns_new(generated, logits):
        new = np.full_like(logits, -np.inf)
        new[only] = 1.0
        return new

    out = m.chat(ASK, logits_processors=[returns_new], temperature=0, max_tokens=2)
    assert out["choices"][0]["message"]["reasoning_content"] == "yes yes"


def test_logits_processor_errors_are_typed() -> None:
    m = text_model()
    with pytest.raises(deepseek_rs.DeepseekValueError, match="not callable"):
        m.chat(ASK, logits_processors=[3], max_tokens=1)
    with pytest.raises(deepseek_rs.DeepseekValueError, match="ZeroDivisionError"):
        m.chat(ASK, logits_processors=[lambda g, l: 1 / 0], max_tokens=1)
    with pytest.raises(deepseek_rs.DeepseekValueError, match="returned 2 logits"):
        m.chat(ASK, logits_processors=[lambda g, l: l[:2]], max_tokens=1)
