"""Exact DeepSeek V2/V3/R1 inference on CPUs.

Load a Hugging Face checkpoint folder with ``Model(path)``; get logits with
``model.logits(ids)`` or evaluate incrementally with ``model.new_session().eval(ids)``.
Errors are ``DeepseekError`` subclasses that are also ``ValueError`` (bad arguments, token
ids, context overflow, config values) or ``FileNotFoundError`` (missing model files).
"""

from ._deepseek_rs import (
    DeepseekError,
    DeepseekFileNotFoundError,
    DeepseekOSError,
    DeepseekValueError,
    Model,
    Session,
    __version__,
)

__all__ = [
    "DeepseekError",
    "DeepseekFileNotFoundError",
    "DeepseekOSError",
    "DeepseekValueError",
    "Model",
    "Session",
    "__version__",
]
