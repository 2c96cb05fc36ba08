"""Tools and structured output with deepseek_rs: a tool round trip, then a JSON-schema answer.

    python examples/python/tools.py [--model DIR] [--tokenizer DIR]

With no --model it runs r1-nano (models/r1-nano, the arithmetic model of the README's first
command). r1-nano was never trained to call tools: the call is forced by tool_choice, which
makes a grammar of DeepSeek's tool-call markup (the function's parameters as its JSON schema)
decide every token of the answer, while the reasoning before it stays free. The OpenAI shapes
are what a real R1 / V3.1 checkpoint returns too. Needs the module (`pip install ./deepseek-py`).
"""

import argparse
import json
from pathlib import Path

import deepseek_rs

ROOT = Path(__file__).resolve().parents[2]

ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Adds two integers.",
        "parameters": {
            "type": "object",
            "properties": {
                "a": {"type": "integer", "minimum": 0, "maximum": 99999},
                "b": {"type": "integer", "minimum": 0, "maximum": 99999},
            },
            "required": ["a", "b"],
            "additionalProperties": False,
        },
    },
}

ANSWER = {
    "type": "object",
    "properties": {
        "question": {"type": "string", "maxLength": 40},
        "sum": {"type": "integer"},
    },
    "required": ["question", "sum"],
    "additionalProperties": False,
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(ROOT / "models" / "r1-nano"))
    p.add_argument("--tokenizer", help="tokenizer folder (default: the model folder)")
    args = p.parse_args()
    model = deepseek_rs.Model(args.model, tokenizer=args.tokenizer)
    common = dict(temperature=0, max_tokens=400, max_reasoning_tokens=300)

    # 1. The model calls the tool (forced), streamed as OpenAI chunks with tool-call deltas.
    messages = [{"role": "user", "content": "What is 4738 + 256?"}]
    force = {"type": "function", "function": {"name": "add"}}
    arguments = ""
    for chunk in model.chat(messages, tools=[ADD], tool_choice=force, stream=True, **common):
        choice = chunk["choices"][0]
        for delta in choice["delta"].get("tool_calls", []):
            if "id" in delta:
                print(f"tool call {delta['index']}: {delta['function']['name']}(", end="")
            arguments += delta["function"]["arguments"]
            print(delta["function"]["arguments"], end="", flush=True)
        if choice["finish_reason"]:
            print(f")  [finish_reason: {choice['finish_reason']}]")

    # The same request, whole: message.tool_calls in OpenAI's shape.
    reply = model.chat(messages, tools=[ADD], tool_choice=force, **common)
    message = reply["choices"][0]["message"]
    (call,) = message["tool_calls"]
    assert reply["choices"][0]["finish_reason"] == "tool_calls"
    assert call["function"]["arguments"] == arguments
    print("message.tool_calls:", json.dumps(message["tool_calls"]))

    # 2. We run the tool and send its result back, naming the call.
    called = json.loads(call["function"]["arguments"])
    result = called["a"] + called["b"]
    print(f"add({called['a']}, {called['b']}) = {result}")
    messages += [
        {"role": "assistant", "content": None, "tool_calls": message["tool_calls"]},
        {"role": "tool", "tool_call_id": call["id"], "content": str(result)},
    ]
    final = model.chat(messages, tools=[ADD], tool_choice="none", **common)
    print("answer after the tool:", repr(final["choices"][0]["message"]["content"]))

    # 3. A JSON-schema answer: it parses and has the schema's fields, whatever the model.
    out = model.chat(
        [{"role": "user", "content": "What is 12 + 30?"}],
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER}},
        **common,
    )
    content = out["choices"][0]["message"]["content"]
    value = json.loads(content)
    assert set(value) == {"question", "sum"} and isinstance(value["sum"], int)
    print("json_schema answer:", content)


if __name__ == "__main__":
    main()
