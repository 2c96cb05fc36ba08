"""Exact DeepSeek V2/V3/R1 inference on CPUs.

Load a Hugging Face checkpoint folder with ``Model(path)``; generate text with
``model.generate(prompt)`` or ``model.chat(messages)`` (OpenAI-shaped output, R1's reasoning
apart from the answer), hold a multi-turn conversation that reuses its KV cache with
``ChatSession(model)``, get logits with ``model.logits(ids)`` or evaluate incrementally with
``model.new_session().eval(ids)`` (``cache_dtype="bf16"`` or ``"q8_0"`` for a smaller cache;
``session.save(path)`` / ``model.load_session(path)`` and ``session.fork()`` to keep or share
a computed prefix). ``Tokenizer.from_pretrained(dir)`` works without a model.
Errors are ``DeepseekError`` subclasses, most also a builtin class: ``ValueError`` (bad
arguments, token ids, sampling parameters, messages, context overflow, model files, tokenizers,
templates), ``OSError`` / ``FileNotFoundError`` (unreadable or missing files), ``RuntimeError``
(a session busy in another thread), ``ArithmeticError`` (NaN/inf logits). The README's bad-input
table lists which input gives which class.
"""

from ._deepseek_rs import (
    ChatCompletionStream,
    ChatSession,
    Chunk,
    DeepseekBusyError,
    DeepseekCancelledError,
    DeepseekContextOverflowError,
    DeepseekError,
    DeepseekFileNotFoundError,
    DeepseekModelFileError,
    DeepseekNumericalError,
    DeepseekOSError,
    DeepseekSessionStateError,
    DeepseekTemplateError,
    DeepseekTokenizerError,
    DeepseekValueError,
    GenerationResult,
    GenerationStream,
    Model,
    Session,
    Tokenizer,
    Usage,
    __version__,
)

__all__ = [
    "ChatCompletionStream",
    "ChatSession",
    "Chunk",
    "DeepseekBusyError",
    "DeepseekCancelledError",
    "DeepseekContextOverflowError",
    "DeepseekError",
    "DeepseekFileNotFoundError",
    "DeepseekModelFileError",
    "DeepseekNumericalError",
    "DeepseekOSError",
    "DeepseekSessionStateError",
    "DeepseekTemplateError",
    "DeepseekTokenizerError",
    "DeepseekValueError",
    "GenerationResult",
    "GenerationStream",
    "Model",
    "Session",
    "Tokenizer",
    "Usage",
    "__version__",
]
