"""Errors are Python exceptions with the Rust message, in both hierarchies."""

import numpy as np
import pytest

import deepseek_rs
from conftest import FIXTURES, R1_TOKENIZER, R1TOK, golden, model, text_model

TINY = FIXTURES / "v3_tiny"


def test_hierarchy() -> None:
    assert issubclass(deepseek_rs.DeepseekError, Exception)
    assert issubclass(deepseek_rs.DeepseekValueError, deepseek_rs.DeepseekError)
    assert issubclass(deepseek_rs.DeepseekValueError, ValueError)
    assert issubclass(deepseek_rs.DeepseekOSError, deepseek_rs.DeepseekError)
    assert issubclass(deepseek_rs.DeepseekOSError, OSError)
    assert issubclass(deepseek_rs.DeepseekFileNotFoundError, deepseek_rs.DeepseekOSError)
    assert issubclass(deepseek_rs.DeepseekFileNotFoundError, FileNotFoundError)
    for cls in (
        deepseek_rs.DeepseekError,
        deepseek_rs.DeepseekValueError,
        deepseek_rs.DeepseekOSError,
        deepseek_rs.DeepseekFileNotFoundError,
    ):
        assert cls.__module__ == "deepseek_rs"


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


def test_corrupt_checkpoint_is_deepseek_error(tmp_path) -> None:
    (tmp_path / "config.json").symlink_to(TINY / "config.json")
    (tmp_path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(deepseek_rs.DeepseekError) as e:
        deepseek_rs.Model(tmp_path)
    assert not isinstance(e.value, (ValueError, OSError)), repr(e.value)


@pytest.mark.parametrize("dtype", ["f17", "q3_k", "", "AUTO "])
def test_bad_dtype(dtype: str) -> None:
    with pytest.raises(ValueError, match="supported: auto, f32, bf16, f16, q8_0, q4_0"):
        deepseek_rs.Model(TINY, dtype=dtype)


@pytest.mark.parametrize("dtype", ["auto", "f32", "bf16", "f16", "q8_0", "q4_0", "q4_1", "Q8_0"])
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
        ([{"role": "assistant", "content": "x", "tool_calls": [{}]}], "tool_calls are not supported"),
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
        with pytest.raises(deepseek_rs.DeepseekValueError, match="no tokenizer.json.*tokenizer=DIR"):
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
