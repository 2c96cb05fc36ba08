"""Exact DeepSeek V2/V3/R1 inference on CPUs.

Type stubs for the extension: the docstrings repeat the Rust doc comments, and
tests/test_api.py fails when names, signatures or docstrings drift from the module.
"""

import os
import pathlib
from typing import Any, Callable, Dict, List, Literal, Mapping, Sequence, TypedDict, Union, overload

import numpy as np
import numpy.typing as npt

__version__: str

# Token ids: a sequence of ints or a 1-D integer numpy array.
_TokenIds = Union[Sequence[int], npt.NDArray[np.integer[Any]]]
_Path = Union[str, "os.PathLike[str]"]

class _ToolCallFunction(TypedDict):
    name: str
    arguments: str

class _ToolCall(TypedDict, total=False):
    id: str
    type: Literal["function"]
    function: _ToolCallFunction

class _Message(TypedDict, total=False):
    role: str
    content: Union[str, None]
    reasoning_content: str
    tool_calls: List[_ToolCall]
    tool_call_id: str
    name: str

# A conversation: [{"role": "user", "content": "..."}, ...].
_Messages = Sequence[Union[_Message, Mapping[str, Any]]]
# A logits processor: f(generated_ids, logits) edits logits in place (returns None) or returns new ones.
_LogitsProcessor = Callable[[List[int], npt.NDArray[np.float32]], Union[npt.NDArray[np.float32], None]]
# logit_bias: {token_id: bias}; ids may be ints or decimal strings (OpenAI's JSON form, e.g. "7").
_LogitBias = Mapping[Union[int, str], float]

class DeepseekError(Exception):
    """Base class of every error deepseek_rs raises; the message is the Rust library's."""

class DeepseekValueError(DeepseekError, ValueError):
    """A bad argument, token id or sampling parameter (a DeepseekError and a ValueError); the base of the errors about model files, tokenizers, templates and context overflow."""

class DeepseekContextOverflowError(DeepseekValueError):
    """The tokens would exceed the session's context length; the session is unchanged (a DeepseekValueError)."""

class DeepseekModelFileError(DeepseekValueError):
    """A checkpoint file is malformed or unsupported: JSON, config field, architecture, safetensors data, a missing or wrong-shaped tensor (a DeepseekValueError)."""

class DeepseekTokenizerError(DeepseekValueError):
    """tokenizer.json or tokenizer_config.json is malformed, or the tokenizer failed on an input (a DeepseekValueError)."""

class DeepseekTemplateError(DeepseekValueError):
    """The chat template failed to compile or render, or needed more than its budget (a DeepseekValueError)."""

class DeepseekSessionStateError(DeepseekValueError):
    """A saved session state is not one, is truncated or corrupt (checksum), of another format version, or was computed by another model (a DeepseekValueError)."""

class DeepseekOSError(DeepseekError, OSError):
    """A model file could not be read (a DeepseekError and an OSError)."""

class DeepseekFileNotFoundError(DeepseekOSError, FileNotFoundError):
    """A model folder or file does not exist (a DeepseekOSError and a FileNotFoundError)."""

class DeepseekNumericalError(DeepseekError, ArithmeticError):
    """The model produced NaN or infinite logits (non-finite weights or an overflow); the session is unchanged (a DeepseekError and an ArithmeticError)."""

class DeepseekBusyError(DeepseekError, RuntimeError):
    """A Session or ChatSession is in use by another call (another thread, or an open stream); nothing was done (a DeepseekError and a RuntimeError)."""

class DeepseekCancelledError(DeepseekError):
    """The call was cancelled before generation started (Ctrl-C raises KeyboardInterrupt instead)."""

class Model:
    """A DeepSeek V2/V3/R1 (or R1-Distill) checkpoint loaded from a Hugging Face folder or a GGUF
    file.

    `path` is the folder with `config.json` and the safetensors (single or sharded), or a
    `.gguf` file (the first part of a split file). `dtype` is the weight format: "auto" (each
    tensor as the checkpoint stores it, memory-mapped), "f32", "bf16", "f16", "q8_0", "q4_0",
    "q4_1", "q4_k", "q6_k" or "q4_k_m" (converted while loading; the K-quants are quantised as
    llama.cpp's llama-quantize does, and "q4_k_m" is its Q4_K_M mix).
    `threads` sizes the default worker pool (default: all cores); `context_length` is the
    default limit of the sessions it opens and of `logits` (default: the model's maximum).
    `cache_dtype` is how those sessions store the KV cache: "f32" (exact, the default),
    "bf16" (half the memory) or "q8_0" (34 bytes per 32 values).
    `tokenizer` is the folder with `tokenizer.json` or a GGUF file with tokenizer metadata
    (default: `path`); without one the model still evaluates ids, and only the text methods
    raise. `generation_config.json` in the folder (or `general.sampling.*` in a GGUF file)
    sets the sampling defaults.

    Weights are memory-mapped and never change: one Model serves many sessions and threads.
    """

    def __init__(
        self,
        path: _Path,
        dtype: str = "auto",
        threads: Union[int, None] = None,
        context_length: Union[int, None] = None,
        tokenizer: Union[_Path, None] = None,
        cache_dtype: str = "f32",
    ) -> None: ...
    def logits(self, ids: _TokenIds, all: bool = False) -> npt.NDArray[np.float32]:
        """Logits after `ids`, evaluated from an empty context (the model keeps no state).

        Returns float32 `[vocab_size]` for the last position, or `[len(ids), vocab_size]` for
        every position with `all=True`. `ids` is a sequence of ints or a 1-D integer array.
        """
    def new_session(
        self,
        context_length: Union[int, None] = None,
        threads: Union[int, None] = None,
        cache_dtype: Union[str, None] = None,
    ) -> "Session":
        """A new session (an empty cache) for incremental evaluation.

        `context_length`, `threads` and `cache_dtype` ("f32", "bf16", "q8_0") default to the
        model's; a session with its own `threads` runs on its own worker pool.
        """
    def load_session(
        self,
        path: _Path,
        context_length: Union[int, None] = None,
        threads: Union[int, None] = None,
    ) -> "Session":
        """A session holding the tokens and KV cache saved at `path` by `Session.save`.

        The cache keeps the format it was saved in. A file that is not a state, is truncated or
        corrupt, or was saved from another model raises DeepseekSessionStateError; more tokens
        than `context_length` raises DeepseekContextOverflowError.
        """
    def tokenize(self, text: str, add_special: bool = True) -> List[int]:
        """Token ids of `text` as `generate` evaluates them: with `add_special`, BOS first if the
        tokenizer config asks for it (`add_bos_token`) and the text does not start with it.
        Special-token strings in the text become their ids.
        """
    def detokenize(self, ids: _TokenIds, skip_special: bool = False) -> str:
        """The text of `ids`; `skip_special=True` drops special tokens such as BOS and EOS."""
    def apply_chat_template(
        self, messages: _Messages, add_generation_prompt: bool = True
    ) -> str:
        """Renders a conversation (`[{"role": ..., "content": ...}, ...]`) with the chat template,
        as `chat` does; with `add_generation_prompt` the text ends where the reply begins.
        """
    @overload
    def generate(
        self,
        prompt: Union[str, _TokenIds],
        *,
        max_tokens: Union[int, None] = None,
        temperature: Union[float, None] = None,
        top_p: Union[float, None] = None,
        top_k: Union[int, None] = None,
        min_p: Union[float, None] = None,
        repetition_penalty: Union[float, None] = None,
        frequency_penalty: Union[float, None] = None,
        presence_penalty: Union[float, None] = None,
        logit_bias: Union[_LogitBias, None] = None,
        seed: Union[int, None] = None,
        stop: Union[str, Sequence[str], None] = None,
        stream: Literal[False] = False,
    ) -> "GenerationResult":
        """Continues `prompt` (a string, or token ids used as they are) and returns a
        GenerationResult, or with `stream=True` a GenerationStream of chunks.

        Unset keywords keep the checkpoint's defaults (generation_config.json; otherwise
        temperature 1 and no truncation). `max_tokens`: most tokens to generate (default: until
        EOS, a stop string or the context length). `temperature` 0 is greedy; `top_k` 0, `top_p`
        1 and `min_p` 0 are off; `repetition_penalty` 1 and the frequency/presence penalties 0
        are off. `logit_bias` maps token ids to values added to their logits (`-inf` bans).
        `seed` makes sampling reproducible. `stop`: a string or list of strings that end the
        output (not included). Output after a prompt ending in `<think>` is reasoning until
        `</think>`. Generation releases the GIL; Ctrl-C stops it at the next token.
        """
    @overload
    def generate(
        self,
        prompt: Union[str, _TokenIds],
        *,
        max_tokens: Union[int, None] = None,
        temperature: Union[float, None] = None,
        top_p: Union[float, None] = None,
        top_k: Union[int, None] = None,
        min_p: Union[float, None] = None,
        repetition_penalty: Union[float, None] = None,
        frequency_penalty: Union[float, None] = None,
        presence_penalty: Union[float, None] = None,
        logit_bias: Union[_LogitBias, None] = None,
        seed: Union[int, None] = None,
        stop: Union[str, Sequence[str], None] = None,
        stream: Literal[True],
    ) -> "GenerationStream": ...
    @overload
    def chat(
        self,
        messages: _Messages,
        *,
        max_tokens: Union[int, None] = None,
        temperature: Union[float, None] = None,
        top_p: Union[float, None] = None,
        top_k: Union[int, None] = None,
        min_p: Union[float, None] = None,
        repetition_penalty: Union[float, None] = None,
        frequency_penalty: Union[float, None] = None,
        presence_penalty: Union[float, None] = None,
        logit_bias: Union[_LogitBias, None] = None,
        seed: Union[int, None] = None,
        stop: Union[str, Sequence[str], None] = None,
        stream: Literal[False] = False,
        tools: Union[Sequence[Mapping[str, Any]], None] = None,
        tool_choice: Union[str, Mapping[str, Any], None] = None,
        response_format: Union[Mapping[str, Any], None] = None,
        max_reasoning_tokens: Union[int, None] = None,
        chat_template_kwargs: Union[Mapping[str, Any], None] = None,
        logits_processors: Union[Sequence[_LogitsProcessor], None] = None,
    ) -> Dict[str, Any]:
        """Answers a conversation (`[{"role": ..., "content": ...}, ...]`) in OpenAI's shape, like
        llama-cpp-python's `create_chat_completion`: `{"id", "object": "chat.completion",
        "created", "model", "choices": [{"index": 0, "message": {"role": "assistant",
        "content", "reasoning_content"}, "finish_reason"}], "usage"}`. With `stream=True`, a
        ChatCompletionStream of `chat.completion.chunk` dicts. Each call starts from an empty
        cache (ChatSession keeps one between turns). Keywords as in `generate`, and OpenAI's
        agent ones: `tools` (a list of `{"type": "function", "function": {"name", "description",
        "parameters"}}`, rendered by the chat template) makes calls come back as
        `message["tool_calls"]` (`[{"id", "type": "function", "function": {"name",
        "arguments"}}]`, arguments a JSON string) with finish_reason "tool_calls"; `tool_choice`
        "auto", "none", "required" or `{"type": "function", "function": {"name": ...}}` (forced
        by a grammar); `response_format` `{"type": "json_object"}`, `{"type": "json_schema",
        "json_schema": {"schema": {...}}}`, `{"type": "regex", "regex": ...}` or `{"type":
        "lark", "grammar": ...}`, enforced on the answer at every token (the reasoning stays
        free); `max_reasoning_tokens` (past it `</think>` is forced; 0: no reasoning);
        `chat_template_kwargs` (extra template variables, e.g. `{"thinking": False}` for V3.1).
        Messages may carry `tool_calls` (assistant) and `tool_call_id` (role "tool").
        `logits_processors`: callables `f(generated_ids, logits)` run before each token is
        chosen, editing the float32 numpy array in place or returning a new one.
        """
    @overload
    def chat(
        self,
        messages: _Messages,
        *,
        max_tokens: Union[int, None] = None,
        temperature: Union[float, None] = None,
        top_p: Union[float, None] = None,
        top_k: Union[int, None] = None,
        min_p: Union[float, None] = None,
        repetition_penalty: Union[float, None] = None,
        frequency_penalty: Union[float, None] = None,
        presence_penalty: Union[float, None] = None,
        logit_bias: Union[_LogitBias, None] = None,
        seed: Union[int, None] = None,
        stop: Union[str, Sequence[str], None] = None,
        stream: Literal[True],
        tools: Union[Sequence[Mapping[str, Any]], None] = None,
        tool_choice: Union[str, Mapping[str, Any], None] = None,
        response_format: Union[Mapping[str, Any], None] = None,
        max_reasoning_tokens: Union[int, None] = None,
        chat_template_kwargs: Union[Mapping[str, Any], None] = None,
        logits_processors: Union[Sequence[_LogitsProcessor], None] = None,
    ) -> "ChatCompletionStream": ...
    @property
    def tokenizer(self) -> Union["Tokenizer", None]:
        """The tokenizer (with the chat template), or None if the model has none."""
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
    by one thread at a time (a call while another runs raises DeepseekBusyError); open one per
    thread.
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
        """Cache bytes per token: `(kv_lora_rank + qk_rope_head_dim) x layers` values (DeepSeek;
        K and V of every KV head otherwise) at 4 bytes (f32), 2 (bf16) or 34 per 32 (q8_0).
        """
    @property
    def cache_dtype(self) -> str:
        """How the KV cache stores its rows: "f32", "bf16" or "q8_0"."""
    def tokens(self) -> List[int]:
        """The token ids in the cache, in order."""
    def save(self, path: _Path) -> None:
        """Writes the tokens and KV cache (in its format) to `path`, with a header naming the model
        and a checksum; `Model.load_session(path)` reads it back. Written under a temporary name
        and renamed, so `path` never holds half a state.
        """
    def fork(self) -> "Session":
        """A new Session holding this one's tokens and cache without recomputing or copying it:
        both share the cache until one writes (then at most 256 tokens per layer are copied).
        Compute a shared prefix once (a system prompt, a document), then fork one per request.
        """
    @property
    def model(self) -> Model:
        """The Model this session runs."""

class Tokenizer:
    """A Hugging Face tokenizer (`tokenizer.json`) with its special tokens and chat template
    (`tokenizer_config.json`), as transformers' `AutoTokenizer` loads it.

    Load one with `Tokenizer.from_pretrained(dir)`, or take a model's with `Model.tokenizer`.
    Encoding matches transformers id for id; templates render as `apply_chat_template` does.
    """

    @staticmethod
    def from_pretrained(path: _Path) -> "Tokenizer":
        """Loads `tokenizer.json` (required) and `tokenizer_config.json` (optional: special tokens,
        `add_bos_token`, `chat_template`) from the folder `path`; without a template in the
        folder, DeepSeek-R1's is used.
        """
    def encode(self, text: str, add_special: bool = False) -> List[int]:
        """Token ids of `text`. Special-token strings in the text become their ids;
        `add_special=True` also adds what the tokenizer's post-processor adds (as transformers'
        `add_special_tokens`).
        """
    def decode(self, ids: _TokenIds, skip_special: bool = False) -> str:
        """The text of `ids` (a sequence of ints or a 1-D integer array); `skip_special=True` drops
        special tokens such as BOS and EOS.
        """
    def apply_chat_template(
        self, messages: _Messages, add_generation_prompt: bool = True
    ) -> str:
        """Renders a conversation (`[{"role": ..., "content": ...}, ...]`) with the chat template;
        with `add_generation_prompt` the text ends where the assistant's reply begins. Encode it
        with `encode(text)` (no added special tokens: the template writes them).
        """
    def token_to_id(self, token: str) -> Union[int, None]:
        """The id of the token spelled `token` (vocabulary or added token), or None."""
    def id_to_token(self, id: int) -> Union[str, None]:
        """The spelling of token `id`, or None if no token has it."""
    @property
    def vocab_size(self) -> int:
        """Number of token ids (one past the largest id, added tokens included)."""
    @property
    def bos_token_id(self) -> Union[int, None]:
        """The BOS token's id, or None."""
    @property
    def eos_token_id(self) -> Union[int, None]:
        """The EOS token's id, or None."""
    @property
    def chat_template(self) -> str:
        """The chat template's Jinja source."""

class ChatSession:
    """A conversation with a Model that keeps its KV cache between turns: each `send` evaluates
    only the tokens the cache does not already hold (see `usage.cached_tokens`).

    `system` is an optional system prompt (kept by `reset()`); `context_length`, `threads` and
    `cache_dtype` ("f32", "bf16", "q8_0") default to the model's. Replies join `messages`
    with the answer as `content` and the reasoning as `reasoning_content` (R1's template
    drops earlier turns' reasoning). One reply at a time: while a streamed reply is open,
    other calls raise DeepseekBusyError (a RuntimeError).
    """

    def __init__(
        self,
        model: Model,
        system: Union[str, None] = None,
        context_length: Union[int, None] = None,
        threads: Union[int, None] = None,
        cache_dtype: Union[str, None] = None,
    ) -> None: ...
    @overload
    def send(
        self,
        text: str,
        *,
        max_tokens: Union[int, None] = None,
        temperature: Union[float, None] = None,
        top_p: Union[float, None] = None,
        top_k: Union[int, None] = None,
        min_p: Union[float, None] = None,
        repetition_penalty: Union[float, None] = None,
        frequency_penalty: Union[float, None] = None,
        presence_penalty: Union[float, None] = None,
        logit_bias: Union[_LogitBias, None] = None,
        seed: Union[int, None] = None,
        stop: Union[str, Sequence[str], None] = None,
        stream: Literal[False] = False,
        tools: Union[Sequence[Mapping[str, Any]], None] = None,
        tool_choice: Union[str, Mapping[str, Any], None] = None,
        response_format: Union[Mapping[str, Any], None] = None,
        max_reasoning_tokens: Union[int, None] = None,
        chat_template_kwargs: Union[Mapping[str, Any], None] = None,
        logits_processors: Union[Sequence[_LogitsProcessor], None] = None,
    ) -> "GenerationResult":
        """Sends a user message and returns the reply as a GenerationResult, or with
        `stream=True` as a GenerationStream of chunks (the reply joins `messages` when the
        stream ends or is closed). Keywords as in `Model.generate`, and the agent ones of
        `Model.chat` (tools, tool_choice, response_format, max_reasoning_tokens,
        chat_template_kwargs, logits_processors); the reply's `tool_calls` join `messages`
        with it.
        """
    @overload
    def send(
        self,
        text: str,
        *,
        max_tokens: Union[int, None] = None,
        temperature: Union[float, None] = None,
        top_p: Union[float, None] = None,
        top_k: Union[int, None] = None,
        min_p: Union[float, None] = None,
        repetition_penalty: Union[float, None] = None,
        frequency_penalty: Union[float, None] = None,
        presence_penalty: Union[float, None] = None,
        logit_bias: Union[_LogitBias, None] = None,
        seed: Union[int, None] = None,
        stop: Union[str, Sequence[str], None] = None,
        stream: Literal[True],
        tools: Union[Sequence[Mapping[str, Any]], None] = None,
        tool_choice: Union[str, Mapping[str, Any], None] = None,
        response_format: Union[Mapping[str, Any], None] = None,
        max_reasoning_tokens: Union[int, None] = None,
        chat_template_kwargs: Union[Mapping[str, Any], None] = None,
        logits_processors: Union[Sequence[_LogitsProcessor], None] = None,
    ) -> "GenerationStream": ...
    def reset(self) -> None:
        """Forgets the conversation and the cache; the system prompt stays."""
    @property
    def messages(self) -> List[Dict[str, str]]:
        """The conversation so far, as a new list of `{"role", "content"[, "reasoning_content"]}`
        dicts.
        """
    @property
    def n_tokens(self) -> int:
        """Tokens held in the KV cache (reused by the next `send` where the prompt matches)."""
    @property
    def system(self) -> Union[str, None]:
        """The system prompt, or None."""
    @property
    def model(self) -> Model:
        """The Model this conversation runs."""

class GenerationResult:
    """The outcome of a generation.

    `text` is the raw output (think tags included; stop string and EOS excluded); R1-style
    output is split into `reasoning_content` (None if no reasoning section was opened) and
    `content`, the answer.
    """

    @property
    def text(self) -> str:
        """The raw generated text."""
    @property
    def reasoning_content(self) -> Union[str, None]:
        """The reasoning section, or None."""
    @property
    def content(self) -> str:
        """The answer."""
    @property
    def tokens(self) -> List[int]:
        """The generated token ids (a final EOS included)."""
    @property
    def tool_calls(self) -> List[_ToolCall]:
        """The tools the model called, as OpenAI's dicts (`{"id", "type": "function",
        "function": {"name", "arguments"}}`); empty unless tools were given.
        """
    @property
    def finish_reason(self) -> Literal["stop", "length", "tool_calls", "cancelled"]:
        """Why generation ended: "stop" (EOS or a stop string), "length" (max_tokens or the context
        length), "tool_calls" (the model called tools) or "cancelled" (a stream closed early).
        """
    @property
    def usage(self) -> "Usage":
        """Token counts and timings."""

class Usage:
    """Token counts and timings of one generation."""

    @property
    def prompt_tokens(self) -> int:
        """Tokens in the prompt."""
    @property
    def cached_tokens(self) -> int:
        """Prompt tokens found in the KV cache and not evaluated again (chat sessions)."""
    @property
    def completion_tokens(self) -> int:
        """Tokens generated (a final EOS included)."""
    @property
    def total_tokens(self) -> int:
        """`prompt_tokens + completion_tokens`."""
    @property
    def prefill_secs(self) -> float:
        """Seconds evaluating the prompt and choosing the first token."""
    @property
    def decode_secs(self) -> float:
        """Seconds producing the other tokens."""
    @property
    def prefill_tok_s(self) -> float:
        """Evaluated prompt tokens per second."""
    @property
    def decode_tok_s(self) -> float:
        """Tokens per second after the first one."""

class Chunk:
    """A piece of streamed text: whole characters, never empty except a tool call's first chunk."""

    @property
    def kind(self) -> Literal["reasoning", "content", "tool_call"]:
        """"reasoning" (inside `<think>` ... `</think>`), "content" (the answer) or "tool_call"
        (a piece of a call's JSON arguments).
        """
    @property
    def text(self) -> str:
        """The new text."""
    @property
    def tool_call_index(self) -> Union[int, None]:
        """For "tool_call": which call (0, 1, ...); else None."""
    @property
    def tool_call_id(self) -> Union[str, None]:
        """The call's id (`call_...`), on its first chunk; else None."""
    @property
    def tool_name(self) -> Union[str, None]:
        """The function's name, on a call's first chunk."""

class GenerationStream:
    """An iterator of `Chunk`s from `Model.generate(..., stream=True)` or
    `ChatSession.send(..., stream=True)`.

    Each step runs the model (GIL released) until a chunk is ready; Ctrl-C stops it at the next
    token. After the last chunk, `result` holds the full text, finish reason and usage.
    `close()` (or dropping the iterator) stops generation and frees its session.
    """

    def __iter__(self) -> "GenerationStream": ...
    def __next__(self) -> Chunk: ...
    def close(self) -> None:
        """Stops generating and frees the session (`result` then says "cancelled"); a chat
        session keeps the partial reply.
        """
    @property
    def result(self) -> Union[GenerationResult, None]:
        """The GenerationResult once the last chunk was taken, else None."""

class ChatCompletionStream:
    """An iterator of OpenAI `chat.completion.chunk` dicts from `Model.chat(..., stream=True)`.

    The first chunk's delta is `{"role": "assistant"}`; then each delta holds a `content` or a
    `reasoning_content` piece, or OpenAI's `tool_calls` delta (`[{"index", "id", "type",
    "function": {"name", "arguments"}}]` on a call's first delta, then `[{"index", "function":
    {"arguments": piece}}]`); the last has an empty delta, the `finish_reason` and `usage`.
    Ctrl-C stops generation at the next token; `close()` (or dropping the iterator) stops it
    and frees its session.
    """

    def __iter__(self) -> "ChatCompletionStream": ...
    def __next__(self) -> Dict[str, Any]: ...
    def close(self) -> None:
        """Stops generating and frees the session; the iterator then ends."""
