"""Exact DeepSeek V2/V3/R1 inference on CPUs.

Load a Hugging Face checkpoint folder with ``Model(path)``; generate text with
``model.generate(prompt)`` or ``model.chat(messages)`` (OpenAI-shaped output, R1's reasoning
apart from the answer), hold a multi-turn conversation that reuses its KV cache with
``ChatSession(model)``, get logits with ``model.logits(ids)`` or evaluate incrementally with
``model.new_session().eval(ids)``. ``Tokenizer.from_pretrained(dir)`` works without a model.
Errors are ``DeepseekError`` subclasses that are also ``ValueError`` (bad arguments, token
ids, sampling parameters, messages, context overflow, config values) or ``FileNotFoundError``
(missing model files).
"""

from ._deepseek_rs import (
    ChatCompletionStream,
    ChatSession,
    Chunk,
    DeepseekError,
    DeepseekFileNotFoundError,
    DeepseekOSError,
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
    "DeepseekError",
    "DeepseekFileNotFoundError",
    "DeepseekOSError",
    "DeepseekValueError",
    "GenerationResult",
    "GenerationStream",
    "Model",
    "Session",
    "Tokenizer",
    "Usage",
    "__version__",
]
