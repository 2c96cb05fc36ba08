"""Errors are Python exceptions with the Rust message, in both hierarchies."""

import _thread
import json
import re
import threading
import time

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import deepseek_rs
from conftest import FIXTURES, R1_TOKENIZER, R1TOK, ROOT, golden, model, text_model

TINY = FIXTURES / "v3_tiny"

# Each class and the builtin class(es) it also derives from, as documented in the README.
HIERARCHY = {
    "DeepseekValueError": ("DeepseekError", ValueError),
    "DeepseekContextOverflowError": ("DeepseekValueError", ValueError),
    "DeepseekModelFileError": ("DeepseekValueError", ValueError),
    "DeepseekTokenizerError": ("DeepseekValueError", ValueError),
    "DeepseekTemplateError": ("DeepseekValueError", ValueError),
    "DeepseekSessionStateError": ("DeepseekValueError", ValueError),
    "DeepseekOSError": ("DeepseekError", OSError),
    "DeepseekFileNotFoundError": ("DeepseekOSError", FileNotFoundError),
    "DeepseekNumericalError": ("DeepseekError", ArithmeticError),
    "DeepseekBusyError": ("DeepseekError", RuntimeError),
    "DeepseekCancelledError": ("DeepseekError", Exception),
}


def test_hierarchy() -> None:
    assert issubclass(deepseek_rs.DeepseekError, Exception)
    assert deepseek_rs.DeepseekError.__module__ == "deepseek_rs"
    for name, (parent, builtin) in HIERARCHY.items():
        cls = getattr(deepseek_rs, name)
        assert issubclass(cls, getattr(deepseek_rs, parent)), name
        assert issubclass(cls, deepseek_rs.DeepseekError), name
        assert issubclass(cls, builtin), name
        assert cls.__module__ == "deepseek_rs", name
    assert not issubclass(deepseek_rs.DeepseekCancelledError, ValueError)


def readme_rows() -> list:
    """The README's bad-input table: [(rust kind, python class)], first code span of each."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Bad input")[1].split("\n## ")[0]
    rows = []
    for line in section.splitlines():
        if not line.startswith("|") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        code = [re.search(r"`([^`]+)`", c) for c in cells]
        rows.append(tuple(m.group(1) if m else None for m in code))
    return rows[1:]  # the header


def test_every_error_kind_raises_the_class_the_readme_documents() -> None:
    rows = readme_rows()
    kinds = {rust for _, rust, _, _ in rows if rust and not rust.startswith("FinishReason")}
    assert len(kinds) >= 17, kinds
    for _, rust, python, _ in rows:
        if python and python.startswith("Deepseek"):
            assert hasattr(deepseek_rs, python), python
        if rust in kinds:
            assert deepseek_rs._deepseek_rs._error_class(rust) is getattr(deepseek_rs, python), rust


def test_missing_dir_is_file_not_found(tmp_path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model") as e:
        deepseek_rs.Model(missing)
    assert isinstance(e.value, deepseek_rs.DeepseekError)


def test_missing_shard_is_file_not_found(tmp_path) -> None:
    src = FIXTURES / "v3_sharded_bf16"
    for f in src.iterdir():
        if f.name != "model-00002-of-00003.safetensors":
            (tmp_path / f.name).symlink_to(f)
    with pytest.raises(FileNotFoundError, match="model-00002-of-00003"):
        deepseek_rs.Model(tmp_path)


def test_bad_config_is_value_error(tmp_path) -> None:
    (tmp_path / "config.json").write_text(
        (TINY / "config.json").read_text().replace('"deepseek_v3"', '"mamba"')
    )
    (tmp_path / "model.safetensors").symlink_to(TINY / "model.safetensors")
    with pytest.raises(ValueError, match="mamba"):
        deepseek_rs.Model(tmp_path)
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(ValueError, match="config.json"):
        deepseek_rs.Model(tmp_path)


def test_corrupt_checkpoint_is_a_model_file_error_like_a_bad_config(tmp_path) -> None:
    # The same kind of failure (a bad checkpoint file) raises the same class.
    (tmp_path / "config.json").symlink_to(TINY / "config.json")
    (tmp_path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(deepseek_rs.DeepseekModelFileError, match="safetensors") as e:
        deepseek_rs.Model(tmp_path)
    assert isinstance(e.value, ValueError) and not isinstance(e.value, OSError)
    (tmp_path / "config.json").unlink()
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(deepseek_rs.DeepseekModelFileError, match="config.json"):
        deepseek_rs.Model(tmp_path)


@pytest.mark.parametrize("dtype", ["f17", "q3_k", "", "AUTO "])
def test_bad_dtype(dtype: str) -> None:
    with pytest.raises(ValueError, match="supported: auto, f32, bf16, f16, q8_0, q4_0"):
        deepseek_rs.Model(TINY, dtype=dtype)


@pytest.mark.parametrize("dtype", ["auto", "f32", "bf16", "f16", "q8_0", "q4_0", "q4_1", "q4_k", "q6_k", "q4_k_m", "Q8_0"])
def test_every_dtype_loads_and_runs(dtype: str) -> None:
    m = deepseek_rs.Model(TINY, dtype=dtype)
    assert m.vocab_size == 512
    assert m.logits([1, 2, 3]).shape == (512,)


@pytest.mark.parametrize("threads", [0, -1])
def test_bad_threads(threads: int) -> None:
    with pytest.raises(ValueError, match="threads must be >= 1"):
        deepseek_rs.Model(TINY, threads=threads)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        model("v3_tiny").new_session(threads=threads)


def test_threads_wrong_type() -> None:
    with pytest.raises(TypeError):
        deepseek_rs.Model(TINY, threads="2")  # type: ignore[arg-type]


@pytest.mark.parametrize("context_length", [0, -5, 257])
def test_bad_context_length(context_length: int) -> None:
    with pytest.raises(ValueError, match="context_length"):
        deepseek_rs.Model(TINY, context_length=context_length)
    with pytest.raises(ValueError, match="context_length"):
        model("v3_tiny").new_session(context_length=context_length)


@pytest.mark.parametrize(
    "ids, match",
    [
        ([5, -1], "token id -1 at position 1 is negative"),
        ([512], r"token id 512 at position 0 is out of range \(vocab_size 512\)"),
        ([1, 2**32], "out of range"),
        ([2**70], "out of range"),
        (np.array([3, -2], dtype=np.int8), "token id -2 at position 1 is negative"),
        (np.array([600], dtype=np.uint32), "out of range"),
        (np.zeros((2, 2), dtype=np.int64), "1-D"),
        ([], "no tokens"),
        (np.array([], dtype=np.int64), "no tokens"),
    ],
)
def test_bad_ids_are_value_errors(ids, match: str) -> None:
    m = model("v3_tiny")
    with pytest.raises(deepseek_rs.DeepseekValueError, match=match):
        m.logits(ids)
    s = m.new_session()
    with pytest.raises(ValueError, match=match):
        s.eval(ids)
    with pytest.raises(ValueError, match=match):
        s.eval_all(ids)
    assert s.n_tokens == 0


@pytest.mark.parametrize("ids", ["abc", b"ab", 5, [1.0, 2.0], np.array([1.0]), [[1, 2]], None])
def test_non_integer_ids_are_type_errors(ids) -> None:
    with pytest.raises(TypeError, match="ids"):
        model("v3_tiny").logits(ids)


def test_context_overflow_is_value_error_and_keeps_the_cache() -> None:
    g = golden("v3_tiny")
    s = model("v3_tiny").new_session(context_length=10)
    s.eval(g.input_ids)
    with pytest.raises(ValueError, match="context overflow: 7 cached \\+ 4 new tokens exceed the context length 10"):
        s.eval([1, 2, 3, 4])
    assert s.n_tokens == 7
    s.eval([1, 2, 3])
    assert s.n_tokens == 10
    with pytest.raises(ValueError, match="context overflow"):
        s.eval([1])
    small = deepseek_rs.Model(TINY, context_length=4)
    assert small.context_length == 4 and small.new_session().context_length == 4
    with pytest.raises(ValueError, match="context overflow"):
        small.logits([1, 2, 3, 4, 5])


def test_bad_truncate() -> None:
    s = model("v3_tiny").new_session()
    s.eval([1, 2, 3])
    with pytest.raises(ValueError, match="cannot truncate to 4"):
        s.truncate(4)
    with pytest.raises(ValueError, match="cannot truncate to -1"):
        s.truncate(-1)
    assert s.n_tokens == 3


# --- the text API ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(temperature=-1), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(top_p=0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(min_p=2), "min_p"),
        (dict(top_k=-1), "top_k must be >= 0"),
        (dict(max_tokens=0), "max_tokens must be >= 1"),
        (dict(max_tokens=-5), "max_tokens must be >= 1"),
        (dict(repetition_penalty=0), "repetition_penalty"),
        (dict(frequency_penalty=3), "frequency_penalty"),
        (dict(presence_penalty=-2.5), "presence_penalty"),
        (dict(seed=-1), "seed"),
        (dict(seed=2**64), "seed"),
        (dict(logit_bias={"x": 1.0}), "logit_bias"),
        (dict(logit_bias={-3: 1.0}), "logit_bias"),
        (dict(logit_bias={5: float("nan")}), "logit_bias"),
        (dict(logit_bias={5: "big"}), "logit_bias"),
        (dict(logit_bias=[1, 2]), "logit_bias"),
        (dict(stop=[""]), "stop"),
        (dict(stop=[1]), "stop"),
        (dict(stop=5), "stop"),
    ],
)
def test_bad_sampling_parameters_are_value_errors(kwargs: dict, match: str) -> None:
    m = text_model()
    with pytest.raises(deepseek_rs.DeepseekValueError, match=match):
        m.generate("hi", **kwargs)
    with pytest.raises(ValueError, match=match):
        m.chat([{"role": "user", "content": "hi"}], stream=True, **kwargs)


def test_out_of_vocabulary_bias_is_a_value_error() -> None:
    # Ids past the tokenizer's vocabulary are padding rows: never sampled, not biasable.
    with pytest.raises(ValueError, match="logit_bias"):
        text_model().generate("hi", max_tokens=1, logit_bias={129_000: 1.0})


@pytest.mark.parametrize(
    "messages, match",
    [
        ("hi", "list of dicts"),
        ({"role": "user", "content": "hi"}, "list of dicts"),
        (5, "list of dicts"),
        ([], "empty conversation"),
        (["hi"], r"messages\[0\] must be a dict"),
        ([{"content": "hi"}], r"messages\[0\] has no string \"role\""),
        ([{"role": "user"}], r"messages\[0\] has no string \"content\""),
        ([{"role": "user", "content": None}], r"has no string \"content\""),
        ([{"role": "user", "content": "a"}, {"role": "user", "content": 1}], r"messages\[1\]\[\"content\"\] must be a string"),
        ([{"role": "", "content": "hi"}], "empty"),
        ([{"role": "assistant", "content": "x", "reasoning_content": 3}], "reasoning_content"),
        ([{"role": "assistant", "content": "x", "tool_calls": [{}]}], r"messages\[0\]\[\"tool_calls\"\]\[0\]: no \"function\""),
    ],
)
def test_bad_messages_are_value_errors(messages, match: str) -> None:
    m = text_model()
    with pytest.raises(deepseek_rs.DeepseekValueError, match=match):
        m.chat(messages)
    with pytest.raises(ValueError, match=match):
        m.apply_chat_template(messages)
    with pytest.raises(ValueError, match=match):
        m.tokenizer.apply_chat_template(messages)


def test_a_model_without_tokenizer_files_still_evaluates() -> None:
    m = deepseek_rs.Model(R1TOK)  # the fixture folder has no tokenizer.json
    assert m.tokenizer is None
    assert m.logits([0, 1, 2]).shape == (m.vocab_size,)
    calls = [
        lambda: m.tokenize("hi"),
        lambda: m.detokenize([1]),
        lambda: m.apply_chat_template([{"role": "user", "content": "hi"}]),
        lambda: m.generate("hi"),
        lambda: m.chat([{"role": "user", "content": "hi"}]),
    ]
    for call in calls:
        with pytest.raises(deepseek_rs.DeepseekValueError, match="has no tokenizer .tokenizer.json.*tokenizer=DIR"):
            call()


def test_bad_tokenizer_folders(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        deepseek_rs.Model(R1TOK, tokenizer=tmp_path)
    # A 512-token model cannot take R1's 128815-token vocabulary.
    with pytest.raises(ValueError, match="vocab_size"):
        deepseek_rs.Model(TINY, tokenizer=R1_TOKENIZER)
    # A broken generation_config.json in the model folder is reported.
    for f in R1TOK.iterdir():
        if f.name != "generation_config.json":
            (tmp_path / f.name).symlink_to(f)
    (tmp_path / "generation_config.json").write_text('{"do_sample": true, "top_p": 0}')
    with pytest.raises(ValueError, match="top_p"):
        deepseek_rs.Model(tmp_path, tokenizer=R1_TOKENIZER)


# --- hardening: each case of issue 12 ------------------------------------------------------


@pytest.mark.parametrize("kwargs", [dict(max_tokens=10**30), dict(top_k=10**30), dict(max_tokens=-(10**30))])
def test_huge_ints_are_value_errors_not_overflow_errors(kwargs: dict) -> None:
    name = next(iter(kwargs))
    with pytest.raises(deepseek_rs.DeepseekValueError, match=name):
        text_model().generate("hi", **kwargs)


def test_huge_counts_are_value_errors() -> None:
    with pytest.raises(deepseek_rs.DeepseekValueError, match="threads"):
        deepseek_rs.Model(TINY, threads=10**30)
    with pytest.raises(deepseek_rs.DeepseekValueError, match="context_length"):
        model("v3_tiny").new_session(context_length=10**30)
    s = model("v3_tiny").new_session()
    with pytest.raises(deepseek_rs.DeepseekValueError, match="out of range"):
        s.truncate(10**30)
    assert text_model().tokenizer.id_to_token(10**30) is None


@pytest.mark.parametrize("key", [" 7", "7 ", "+7", "07", "7.0", "0x7", True, 7.0])
def test_logit_bias_keys_must_be_token_ids(key) -> None:
    with pytest.raises(deepseek_rs.DeepseekValueError, match="logit_bias: .* is not a token id"):
        text_model().generate("hi", max_tokens=1, logit_bias={key: 1.0})


def test_logit_bias_accepts_ints_and_their_decimal_strings() -> None:
    m = text_model()
    banned = m.generate("hi", max_tokens=1, temperature=0).tokens[0]
    for key in (banned, str(banned)):
        r = m.generate("hi", max_tokens=1, temperature=0, logit_bias={key: float("-inf")})
        assert r.tokens[0] != banned


def test_a_prompt_longer_than_the_context_is_refused_at_once() -> None:
    m = deepseek_rs.Model(R1TOK, threads=2, tokenizer=R1_TOKENIZER, context_length=600)
    prompt = "word " * 1100
    n = len(m.tokenize(prompt))
    assert n > 1024
    # The whole prompt is reported, not "512 cached + 512 new" after filling the context.
    want = f"context overflow: 0 cached \\+ {n} new tokens exceed the context length 600"
    with pytest.raises(deepseek_rs.DeepseekContextOverflowError, match=want):
        m.generate(prompt, max_tokens=1)
    with pytest.raises(deepseek_rs.DeepseekContextOverflowError, match="0 cached"):
        m.chat([{"role": "user", "content": prompt}], max_tokens=1)
    with pytest.raises(ValueError, match="context overflow"):
        m.generate(prompt, max_tokens=1, stream=True)


def model_folder_with(tmp_path, **generation_config):
    """v3_r1tok in tmp_path with `generation_config` as its generation_config.json."""
    for f in R1TOK.iterdir():
        if f.name != "generation_config.json":
            (tmp_path / f.name).symlink_to(f)
    (tmp_path / "generation_config.json").write_text(json.dumps(generation_config))
    return tmp_path


def test_max_new_tokens_zero_is_refused_at_load(tmp_path) -> None:
    folder = model_folder_with(tmp_path, eos_token_id=1, max_new_tokens=0)
    with pytest.raises(deepseek_rs.DeepseekModelFileError, match="max_new_tokens"):
        deepseek_rs.Model(folder, tokenizer=R1_TOKENIZER)


def test_eos_ids_the_tokenizer_does_not_have_are_refused(tmp_path) -> None:
    # Below the model's vocab_size (129280) but past the tokenizer's 128815 ids.
    folder = model_folder_with(tmp_path, eos_token_id=[1, 129000])
    with pytest.raises(deepseek_rs.DeepseekModelFileError, match="eos_token_id.*129000"):
        deepseek_rs.Model(folder, tokenizer=R1_TOKENIZER)


def test_nan_weights_raise_a_numerical_error(tmp_path) -> None:
    tensors = load_file(str(TINY / "model.safetensors"))
    tensors["model.norm.weight"] = np.full_like(tensors["model.norm.weight"], np.nan)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").symlink_to(TINY / "config.json")
    m = deepseek_rs.Model(tmp_path, threads=1)
    with pytest.raises(deepseek_rs.DeepseekNumericalError, match="non-finite logits"):
        m.logits([1, 2, 3])
    s = m.new_session()
    with pytest.raises(ArithmeticError):
        s.eval([1, 2])
    assert s.n_tokens == 0


def test_a_catastrophic_tokenizer_regex_is_a_tokenizer_error(tmp_path) -> None:
    tok = json.loads((R1_TOKENIZER / "tokenizer.json").read_text())
    tok["pre_tokenizer"] = {
        "type": "Split",
        "pattern": {"Regex": "(a|aa)+c"},
        "behavior": "Isolated",
        "invert": False,
    }
    (tmp_path / "tokenizer.json").write_text(json.dumps(tok))
    t = deepseek_rs.Tokenizer.from_pretrained(tmp_path)
    # A PanicException (a BaseException) escaped `except Exception` before.
    with pytest.raises(deepseek_rs.DeepseekTokenizerError, match="retry"):
        t.encode("a" * 60 + "b")
    assert t.encode("hello") == t.encode("hello")


def test_two_threads_on_one_session_get_a_busy_error() -> None:
    m = deepseek_rs.Model(FIXTURES / "v2_group_tiny", threads=1)
    ids = np.arange(m.context_length) % m.vocab_size
    s = m.new_session()
    want = m.new_session().eval_all(ids)
    out = {}

    def work() -> None:
        out["logits"] = s.eval_all(ids)

    worker = threading.Thread(target=work)
    worker.start()
    errors = []
    while worker.is_alive() and not errors:
        try:
            s.truncate(s.n_tokens)  # a no-op whenever it gets the session
        except deepseek_rs.DeepseekBusyError as e:
            errors.append(e)
    worker.join()
    assert errors, "the second thread never met the running eval"
    assert isinstance(errors[0], RuntimeError) and "in use by another thread" in str(errors[0])
    # The running call was not disturbed.
    np.testing.assert_array_equal(out["logits"], want)
    assert s.n_tokens == m.context_length


def test_ctrl_c_stops_a_template_while_it_renders(tmp_path) -> None:
    # A template that would render for a long time (until its budget runs out), and a Ctrl-C
    # 0.2 s into the call: KeyboardInterrupt, not the template's budget error seconds later.
    config = json.loads((R1_TOKENIZER / "tokenizer_config.json").read_text())
    config["chat_template"] = (
        "{% for m in messages %}{% for i in range(1000) %}{{ m['content'] }}{% endfor %}{% endfor %}"
    )
    (tmp_path / "tokenizer.json").symlink_to(R1_TOKENIZER / "tokenizer.json")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    m = deepseek_rs.Model(R1TOK, threads=1, tokenizer=tmp_path)
    messages = [{"role": "user", "content": "x"}] * 60000
    timer = threading.Timer(0.2, _thread.interrupt_main)
    started = time.perf_counter()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            m.chat(messages, max_tokens=1)
    finally:
        timer.cancel()
    interrupted = time.perf_counter() - started
    # Uninterrupted, the same render runs out of budget, much later.
    started = time.perf_counter()
    with pytest.raises(deepseek_rs.DeepseekTemplateError, match="budget"):
        m.tokenizer.apply_chat_template(messages)
    full = time.perf_counter() - started
    assert interrupted < full / 2, (interrupted, full)
