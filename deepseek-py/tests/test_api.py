"""The Python surface: config, properties, arrays, threads, and the stubs matching the module."""

import ast
import inspect
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import deepseek_rs
from conftest import FIXTURES, NAMES, assert_close, golden, model

PACKAGE = Path(deepseek_rs.__file__).parent
STUB = PACKAGE / "__init__.pyi"


def test_version() -> None:
    # The same version as the Rust crates (the workspace manifest) and the installed wheel.
    import importlib.metadata
    import re

    manifest = (Path(__file__).parents[2] / "Cargo.toml").read_text()
    package = manifest[manifest.index("[workspace.package]") :]
    want = re.search(r'^version = "([^"]+)"', package, re.M).group(1)
    assert deepseek_rs.__version__ == want
    assert importlib.metadata.version("deepseek-rs") == want


def test_properties() -> None:
    m = model("v3_tiny")
    assert m.vocab_size == 512
    assert m.context_length == 256 == m.config["max_position_embeddings"]
    assert m.threads == 2
    assert m.path == FIXTURES / "v3_tiny"
    assert "vocab_size=512" in repr(m)
    s = m.new_session(context_length=32, threads=1)
    assert (s.n_tokens, s.context_length) == (0, 32)
    # (kv_lora_rank 32 + qk_rope_head_dim 8) x 3 layers x 4 bytes
    assert s.cache_bytes_per_token == (32 + 8) * 3 * 4
    assert s.model is m
    assert repr(s) == "Session(n_tokens=0, context_length=32)"


def json_value(raw: dict, key: str):
    """A config.json value, looking through the transformers-5 `rope_parameters` form."""
    if key == "rope_scaling" and raw.get("rope_parameters"):
        return raw["rope_parameters"]
    if key == "rope_theta" and raw.get("rope_theta") is None and raw.get("rope_parameters"):
        return raw["rope_parameters"]["rope_theta"]
    return raw.get(key)


@pytest.mark.parametrize("fixture", NAMES)
def test_config_uses_hf_names_and_values(fixture: str) -> None:
    m = model(fixture)
    c = m.config
    raw = json.loads((FIXTURES / fixture / "config.json").read_text())
    common = (
        "model_type vocab_size hidden_size intermediate_size num_hidden_layers "
        "num_attention_heads rope_theta rope_scaling rms_norm_eps tie_word_embeddings "
        "max_position_embeddings quantization_config bos_token_id eos_token_id"
    )
    if c["model_type"].startswith("deepseek"):
        family = (
            "q_lora_rank kv_lora_rank qk_nope_head_dim qk_rope_head_dim v_head_dim "
            "n_routed_experts n_shared_experts num_experts_per_tok moe_intermediate_size "
            "topk_method scoring_func n_group topk_group norm_topk_prob "
            "routed_scaling_factor first_k_dense_replace moe_layer_freq"
        )
    else:  # the R1-Distill families (Qwen2, Llama 3, Qwen3)
        family = "num_key_value_heads head_dim"
    for key in (common + " " + family).split():
        assert key in c, key
        want = json_value(raw, key)
        if want is None:
            continue  # a default the core filled in
        if isinstance(c[key], dict):
            for k, v in c[key].items():
                if k in want:  # else a default the core filled in
                    assert v == want[k], f"{key}.{k}: {v} != {want[k]}"
        else:
            assert c[key] == want, f"{key}: {c[key]} != {want}"
    assert c["vocab_size"] == m.vocab_size
    c["vocab_size"] = 0  # a copy: the model is unaffected
    assert m.config["vocab_size"] == m.vocab_size


def test_arrays_are_fresh_writable_float32() -> None:
    g = golden("v3_tiny")
    s = model("v3_tiny").new_session()
    a = s.eval(g.input_ids)
    assert a.dtype == np.float32 and a.shape == (512,) and a.flags.writeable
    a[:] = 0  # owned by the caller: the next eval does not see it
    b = s.eval(g.greedy_ids[:1])
    assert_close("after scribbling", b, g.logits[7])
    assert_close("first array untouched by the next eval", a, np.zeros(512, np.float32))
    assert s.eval_all(g.greedy_ids[1:3]).shape == (2, 512)


def test_sessions_are_independent_and_threads_can_share_a_model() -> None:
    g = golden("v2_lite_tiny")
    m = model("v2_lite_tiny")
    results = {}

    def run(i: int) -> None:
        s = m.new_session()
        results[i] = []
        for _ in range(5):
            s.reset()
            results[i].append(s.eval_all(g.all_ids))

    workers = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for i in range(4):
        for got in results[i]:
            assert_close(f"thread {i}", got, g.logits)


def test_eval_releases_the_gil() -> None:
    # A long eval on one thread while this thread keeps running Python: with the GIL held, no
    # bytecode of ours could run in the middle of the call.
    m = deepseek_rs.Model(FIXTURES / "v2_group_tiny", threads=1)
    ids = np.arange(m.context_length) % m.vocab_size
    s = m.new_session()
    span = {}

    def work() -> None:
        span["start"] = time.perf_counter()
        s.eval_all(ids)
        span["end"] = time.perf_counter()

    ticks = []
    worker = threading.Thread(target=work)
    worker.start()
    while worker.is_alive():
        ticks.append(time.perf_counter())
    worker.join()
    start, end = span["start"], span["end"]
    margin = 0.1 * (end - start)
    assert end - start > 0.02, "eval too short to tell"
    inside = [t for t in ticks if start + margin < t < end - margin]
    assert inside, f"no Python ran during a {end - start:.3f}s eval"


# --- the stubs and the docs --------------------------------------------------------------


def test_stubs_and_marker_ship_in_the_package() -> None:
    assert STUB.is_file()
    assert (PACKAGE / "py.typed").is_file()


def stub_tree() -> dict:
    """{name: node} of the stub's top level; classes map to {member: node} (an overloaded
    member: its first definition, the one with the docstring)."""
    out = {}
    for node in ast.parse(STUB.read_text()).body:
        if isinstance(node, ast.ClassDef):
            members: dict = {}
            for n in node.body:
                if isinstance(n, ast.FunctionDef):
                    members.setdefault(n.name, n)
            out[node.name] = members
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = node
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                out[t.id] = node  # type: ignore[attr-defined]
    return {k: v for k, v in out.items() if not k.startswith("_") or k == "__version__"}


def public(cls: type) -> set:
    own = set()
    for klass in cls.__mro__:
        if klass.__module__ in ("deepseek_rs", "builtins") and klass is not object:
            if klass.__module__ == "deepseek_rs":
                own |= {n for n in vars(klass) if not n.startswith("_")}
    return own


NO_DEFAULT = "<no default>"


def stub_params(fn: ast.FunctionDef) -> list:
    """[(name, default, keyword_only)]; a parameter without a default has NO_DEFAULT."""
    args = fn.args
    names = [a.arg for a in args.args]
    defaults = [NO_DEFAULT] * (len(names) - len(args.defaults)) + [
        ast.literal_eval(d) for d in args.defaults
    ]
    out = [(n, d, False) for n, d in zip(names, defaults) if n != "self"]
    for a, d in zip(args.kwonlyargs, args.kw_defaults):
        out.append((a.arg, NO_DEFAULT if d is None else ast.literal_eval(d), True))
    return out


def runtime_params(obj) -> list:
    sig = inspect.signature(obj)
    return [
        (
            p.name,
            NO_DEFAULT if p.default is inspect.Parameter.empty else p.default,
            p.kind is inspect.Parameter.KEYWORD_ONLY,
        )
        for p in sig.parameters.values()
        if p.name != "self"
    ]


def is_overload(fn: ast.FunctionDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "overload" for d in fn.decorator_list)


def stub_class_functions(name: str) -> list:
    """Every function definition in the stub's class `name`, overloads included."""
    stub = ast.parse(STUB.read_text())
    cls = next(n for n in stub.body if isinstance(n, ast.ClassDef) and n.name == name)
    return [n for n in cls.body if isinstance(n, ast.FunctionDef)]


def test_stub_lists_exactly_the_public_names() -> None:
    stub = stub_tree()
    assert sorted(stub) == sorted(deepseek_rs.__all__)
    native = deepseek_rs._deepseek_rs
    assert sorted(n for n in dir(native) if not n.startswith("_")) == sorted(
        n for n in deepseek_rs.__all__ if not n.startswith("_")
    )
    for name, members in stub.items():
        if not isinstance(members, dict):
            continue
        cls = getattr(deepseek_rs, name)
        stub_members = {n for n in members if not n.startswith("_")}
        assert stub_members == public(cls), name


def test_stub_signatures_match() -> None:
    for name, members in stub_tree().items():
        if not isinstance(members, dict):
            continue
        cls = getattr(deepseek_rs, name)
        for fn in stub_class_functions(name):
            member = fn.name
            is_property = any(
                isinstance(d, ast.Name) and d.id == "property" for d in fn.decorator_list
            )
            if member == "__init__":
                if sys.version_info < (3, 10):
                    continue  # abi3 below 3.10 cannot give a class a __text_signature__
                assert stub_params(fn) == runtime_params(cls), f"{name}()"
            elif is_property:
                assert inspect.isdatadescriptor(getattr(cls, member)), f"{name}.{member}"
            else:
                got = runtime_params(getattr(cls, member))
                want = stub_params(fn)
                if is_overload(fn):
                    # An overload may narrow a parameter (`stream: Literal[True]`) and drop
                    # its default; names, order, kinds and the other defaults must match.
                    want = [
                        (n, g[1] if d == NO_DEFAULT else d, k)
                        for (n, d, k), g in zip(want, got)
                    ]
                assert want == got, f"{name}.{member}"


def test_every_public_name_has_a_docstring() -> None:
    assert deepseek_rs.__doc__ and deepseek_rs._deepseek_rs.__doc__
    stub = stub_tree()
    for name in deepseek_rs.__all__:
        if name.startswith("_"):
            continue
        obj = getattr(deepseek_rs, name)
        assert (obj.__doc__ or "").strip(), name
        for member in public(obj):
            assert (getattr(obj, member).__doc__ or "").strip(), f"{name}.{member}"
            assert ast.get_docstring(stub[name][member]), f"stub {name}.{member}"


def test_stub_docstrings_are_the_runtime_ones() -> None:
    # The stub repeats the Rust doc comments so editors show them; this keeps them in step.
    stub = ast.parse(STUB.read_text())
    assert ast.get_docstring(stub).split("\n")[0] == deepseek_rs.__doc__.split("\n")[0]
    for name, members in stub_tree().items():
        if not isinstance(members, dict):
            continue
        obj = getattr(deepseek_rs, name)
        cls_node = next(n for n in stub.body if isinstance(n, ast.ClassDef) and n.name == name)
        assert ast.get_docstring(cls_node) == inspect.getdoc(obj), name
        for member, fn in members.items():
            if member.startswith("_"):
                continue
            assert ast.get_docstring(fn) == inspect.getdoc(getattr(obj, member)), (
                f"{name}.{member}"
            )
