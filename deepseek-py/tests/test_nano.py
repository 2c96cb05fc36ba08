"""r1-nano (models/r1-nano, our trained R1-architecture model) through the Python API: the
held-out questions get the answers transformers gave, with the reasoning kept apart."""

import json

import deepseek_rs
from conftest import ROOT

NANO = ROOT / "models" / "r1-nano"


def test_r1_nano_answers_like_transformers_in_python() -> None:
    heldout = json.loads((NANO / "heldout.json").read_text())
    m = deepseek_rs.Model(NANO, threads=1)
    # A slice of the held-out set keeps the test quick; the Rust end-to-end test runs all 200.
    questions = [q for q in heldout["questions"] if q["correct"]][:12]
    for q in questions:
        r = m.chat([{"role": "user", "content": q["question"]}], temperature=0, max_tokens=400)
        message = r["choices"][0]["message"]
        assert message["content"].strip() == q["expected"], q["question"]
        assert "result:" in message["reasoning_content"]
        assert "think>" not in message["content"] + message["reasoning_content"]
        assert r["choices"][0]["finish_reason"] == "stop"


def test_r1_nano_streams_reasoning_before_the_answer() -> None:
    m = deepseek_rs.Model(NANO, threads=1)
    chunks = list(
        m.chat([{"role": "user", "content": "What is 4738 + 256?"}], temperature=0, stream=True)
    )
    kinds = [
        "reasoning" if d.get("reasoning_content") else "content"
        for c in chunks
        for d in [c["choices"][0]["delta"]]
        if d.get("reasoning_content") or d.get("content")
    ]
    assert kinds and kinds[0] == "reasoning"
    assert kinds == sorted(kinds, key=lambda k: k == "content")
    answer = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert answer.strip() == "4738 + 256 = 4994"
