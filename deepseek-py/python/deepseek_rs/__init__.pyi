"""Exact DeepSeek V2/V3/R1 inference on CPUs.

Type stubs for the extension: the docstrings repeat the Rust doc comments, and
tests/test_api.py fails when names, signatures or docstrings drift from the module.
"""

import os
import pathlib
from typing import Any, Dict, Sequence, Union

import numpy as np
import numpy.typing as npt

__version__: str

# Token ids: a sequence of ints or a 1-D integer numpy array.
_TokenIds = Union[Sequence[int], npt.NDArray[np.integer[Any]]]

class DeepseekError(Exception):
    """Base class of every error deepseek_rs raises; the message is the Rust library's."""

class DeepseekValueError(DeepseekError, ValueError):
    """A bad argument, token id, context overflow or config.json value (a DeepseekError and a ValueError)."""

class DeepseekOSError(DeepseekError, OSError):
    """A model file could not be read (a DeepseekError and an OSError)."""

class DeepseekFileNotFoundError(DeepseekOSError, FileNotFoundError):
    """A model folder or file does not exist (a DeepseekOSError and a FileNotFoundError)."""

class Model:
    """A DeepSeek V2/V3/R1 checkpoint loaded from a Hugging Face folder.

    `path` is the folder with `config.json` and the safetensors (single or sharded). `dtype`
    is the weight format: "auto" (each tensor as the checkpoint stores it, memory-mapped),
    "f32", "bf16", "f16", "q8_0" or "q4_0" (converted while loading).
    `threads` sizes the default worker pool (default: all cores); `context_length` is the
    default limit of the sessions it opens and of `logits` (default: the model's maximum).

    Weights are memory-mapped and never change: one Model serves many sessions and threads.
    """

    def __init__(
        self,
        path: Union[str, "os.PathLike[str]"],
        dtype: str = "auto",
        threads: Union[int, None] = None,
        context_length: Union[int, None] = None,
    ) -> None: ...
    def logits(self, ids: _TokenIds, all: bool = False) -> npt.NDArray[np.float32]:
        """Logits after `ids`, evaluated from an empty context (the model keeps no state).

        Returns float32 `[vocab_size]` for the last position, or `[len(ids), vocab_size]` for
        every position with `all=True`. `ids` is a sequence of ints or a 1-D integer array.
        """
    def new_session(
        self, context_length: Union[int, None] = None, threads: Union[int, None] = None
    ) -> "Session":
        """A new session (an empty cache) for incremental evaluation.

        `context_length` and `threads` default to the model's; a session with its own
        `threads` runs on its own worker pool.
        """
    @property
    def config(self) -> Dict[str, Any]:
        """The validated config as a new dict with Hugging Face field names, defaults filled in."""
    @property
    def vocab_size(self) -> int:
        """Number of token ids (rows of the logits)."""
    @property
    def context_length(self) -> int:
        """Default context length of new sessions and of `logits`."""
    @property
    def threads(self) -> int:
        """Worker threads of the default pool."""
    @property
    def path(self) -> pathlib.Path:
        """The checkpoint folder, as given."""

class Session:
    """An evaluation context over a Model: the latent KV cache of the tokens fed so far.

    Open one with `Model.new_session()`. Each `eval` appends to the cache. A session is used
    by one thread at a time (a concurrent call raises RuntimeError); open one per thread.
    """

    def eval(self, ids: _TokenIds) -> npt.NDArray[np.float32]:
        """Appends `ids` to the cache and returns the float32 logits `[vocab_size]` after the last."""
    def eval_all(self, ids: _TokenIds) -> npt.NDArray[np.float32]:
        """Appends `ids` and returns the float32 logits `[len(ids), vocab_size]` of every new position."""
    def reset(self) -> None:
        """Forgets every cached token."""
    def truncate(self, n: int) -> None:
        """Keeps only the first `n` cached tokens (e.g. to reuse a shared prompt prefix)."""
    @property
    def n_tokens(self) -> int:
        """Tokens in the cache (the position of the next token)."""
    @property
    def context_length(self) -> int:
        """The most tokens this session accepts."""
    @property
    def cache_bytes_per_token(self) -> int:
        """Cache bytes per token: `(kv_lora_rank + qk_rope_head_dim) x layers x 4`."""
    @property
    def model(self) -> Model:
        """The Model this session runs."""
