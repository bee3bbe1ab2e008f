"""ChatGLM-6B (v1), the paper's base model, built into the harness (no remote code).

:func:`register` makes ``AutoConfig``, ``AutoModelForCausalLM`` (and ``AutoModel``,
``AutoModelForSeq2SeqLM``, the classes the checkpoint's ``auto_map`` names) and
``AutoTokenizer`` resolve ``model_type: chatglm`` to the native classes, so the unmodified
THUDM/chatglm-6b directory loads with ``trust_remote_code=False`` and no file of it is
executed. ``moelora.models.loading`` calls it before loading any model.

Modules: ``configuration`` (the config, original field names), ``layout`` (2D positions,
prefix-LM mask), ``modeling`` (the model), ``tokenization`` (the SentencePiece tokenizer),
``checkpoint`` (safe ``.bin`` reading, conversion to safetensors), ``tiny`` (a toy checkpoint
in the release's layout, for tests and the oracle, experiments/chatglm_oracle.py).
"""

from __future__ import annotations

from moelora.models.chatglm.configuration import ChatGLMConfig

_REGISTERED = False


def register() -> None:
    """Register the native ChatGLM-6B classes with the ``transformers`` auto classes (once)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        AutoTokenizer,
    )

    from moelora.models.chatglm.modeling import ChatGLMForConditionalGeneration
    from moelora.models.chatglm.tokenization import ChatGLMTokenizer

    AutoConfig.register("chatglm", ChatGLMConfig, exist_ok=True)
    for auto in (AutoModelForCausalLM, AutoModel, AutoModelForSeq2SeqLM):
        auto.register(ChatGLMConfig, ChatGLMForConditionalGeneration, exist_ok=True)
    AutoTokenizer.register(ChatGLMConfig, slow_tokenizer_class=ChatGLMTokenizer, exist_ok=True)
    _REGISTERED = True


__all__ = ["ChatGLMConfig", "register"]
