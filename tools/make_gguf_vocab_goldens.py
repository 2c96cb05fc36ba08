#!/usr/bin/env python3
"""Goldens of the tokenizer metadata llama.cpp's converter writes (run by hand).

For each committed real tokenizer, runs llama.cpp's `convert_hf_to_gguf.py --vocab-only` on a
scratch folder holding its tokenizer.json, tokenizer_config.json and a config.json of the right
architecture (the tiny fixtures' configs, with the real model's vocab_size), then records every
`tokenizer.*` key of the GGUF it wrote, in order, with its type and a SHA-256 digest of its value
(the files themselves are 4-8 MB and stay out of the repository). The unit tests of
`deepseek_core::loader::gguf_vocab` compare `gguf_vocab_metadata` with these, key by key.

    python3 tools/make_gguf_vocab_goldens.py \\
        --llama-cpp /path/to/llama_cpp_python-0.3.36/vendor/llama.cpp \\
        --python /path/to/venv-transformers4/bin/python \\
        [--python5 /path/to/venv-transformers5/bin/python]

`--python` runs the converter; use transformers 4.x: the converter names a pre-tokenizer by a
fingerprint of `tokenizer.encode(text)`, registered with transformers 4, which prepends BOS for
these `LlamaTokenizerFast` configs. Under transformers 5 (no BOS) the same converter writes
`joyai-llm`, `qwen2` and `smaug-bpe` instead of `deepseek-v3`, `deepseek-r1-qwen` and
`llama-bpe`; with `--python5` that name is recorded too (`pre_transformers_5`).

Digest of a value: sha256 of `TAG + "\\0" + BODY`, TAG the GGUF type (`str`, `u32`, `i32`,
`bool`, `arr:ELEMTAG`), BODY the UTF-8 string, the decimal integer, `1`/`0`, or the elements'
bodies joined by NUL.
"""

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "deepseek-core" / "tests" / "fixtures"
OUT = FIXTURES / "gguf_vocab" / "converter.json"

# name -> (tiny config fixture, the real model's vocab_size)
MODELS = {
    "deepseek-r1": ("v3_r1tok", 129280),
    "deepseek-r1-distill-qwen-7b": ("qwen2_r1tok", 152064),
    "deepseek-r1-distill-llama-8b": ("llama3_tiny", 128256),
}


def tag_and_body(gguf, field):
    t = gguf.GGUFValueType
    tags = {
        t.UINT8: "u8", t.INT8: "i8", t.UINT16: "u16", t.INT16: "i16", t.UINT32: "u32",
        t.INT32: "i32", t.FLOAT32: "f32", t.BOOL: "bool", t.STRING: "str", t.UINT64: "u64",
        t.INT64: "i64", t.FLOAT64: "f64",
    }

    def body(tag, v):
        if tag == "str":
            return v.encode("utf-8")
        if tag == "bool":
            return b"1" if v else b"0"
        if tag in ("f32", "f64"):
            sys.exit("float metadata has no digest format")
        return str(int(v)).encode()

    value = field.contents()
    if field.types[0] == t.ARRAY:
        etag = tags[field.types[1]]
        return "arr:" + etag, b"\0".join(body(etag, v) for v in value)
    tag = tags[field.types[0]]
    return tag, body(tag, value)


def convert(python, llama_cpp, name, config_fixture, vocab_size, tmp):
    src = tmp / name
    src.mkdir()
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(FIXTURES / "tokenizers" / name / f, src / f)
    config = json.loads((FIXTURES / config_fixture / "config.json").read_text())
    config["vocab_size"] = vocab_size
    (src / "config.json").write_text(json.dumps(config, indent=1))
    out = tmp / f"{name}.gguf"
    subprocess.run(
        [python, str(llama_cpp / "convert_hf_to_gguf.py"), str(src), "--vocab-only",
         "--outfile", str(out)],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return out


def version(python, module):
    return subprocess.run(
        [python, "-c", f"import {module}; print({module}.__version__)"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-cpp", type=Path, required=True, help="llama.cpp source folder")
    ap.add_argument("--python", default=sys.executable, help="interpreter with transformers 4")
    ap.add_argument("--python5", help="optional interpreter with transformers 5")
    args = ap.parse_args()
    sys.path.insert(0, str(args.llama_cpp / "gguf-py"))
    import gguf  # noqa: E402

    golden = {
        "generator": "tools/make_gguf_vocab_goldens.py",
        # e.g. llama_cpp_python-0.3.36/vendor/llama.cpp (no local path in the repository)
        "converter": "/".join(args.llama_cpp.resolve().parts[-3:])
        + "/convert_hf_to_gguf.py --vocab-only",
        "transformers": version(args.python, "transformers"),
        "digest": "sha256(TAG NUL BODY), see tools/make_gguf_vocab_goldens.py",
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, (config_fixture, vocab_size) in MODELS.items():
            path = convert(args.python, args.llama_cpp, name, config_fixture, vocab_size, tmp)
            reader = gguf.GGUFReader(path)
            keys = []
            for key, field in reader.fields.items():
                if not key.startswith("tokenizer."):
                    continue
                tag, body = tag_and_body(gguf, field)
                keys.append([key, tag, hashlib.sha256(tag.encode() + b"\0" + body).hexdigest()])
            entry = {"config": f"{config_fixture}/config.json", "vocab_size": vocab_size,
                     "pre": reader.fields["tokenizer.ggml.pre"].contents(), "keys": keys}
            if args.python5:
                (tmp / "t5").mkdir(exist_ok=True)
                path = convert(args.python5, args.llama_cpp, name, config_fixture, vocab_size,
                               tmp / "t5")
                entry["pre_transformers_5"] = gguf.GGUFReader(path).fields[
                    "tokenizer.ggml.pre"].contents()
                entry["transformers_5"] = version(args.python5, "transformers")
            golden["models"][name] = entry
            print(name, [k[0] for k in keys])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(golden, indent=1, ensure_ascii=False)
    # One line per key: [name, tag, digest].
    text = re.sub(r'\[\n\s+("[^"]+"),\n\s+("[^"]+"),\n\s+("[0-9a-f]{64}")\n\s+\]',
                  r"[\1, \2, \3]", text)
    OUT.write_text(text + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
