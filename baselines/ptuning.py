"""P-Tuning (docs/methods.md §3) through ``peft``: one continuous prompt for all tasks.

``v1_prompt_encoder`` (default, the paper's description and citation): ``num_virtual_tokens``
trainable embeddings → MLP reparameterisation (Linear→ReLU→Linear→ReLU→Linear, width =
model hidden size) → virtual token embeddings prepended to the input embeddings (mask
extended with ones, labels with −100). ``v2_prefix``: deep prefix tuning, key/value vectors
per layer, no projection (PEFT ``PrefixTuningConfig``). Only the prompt encoder trains; the
virtual tokens do not count against ``max_source_length``. At init the model does not
equal the base (the random prompt changes every output).
"""

from __future__ import annotations

from collections.abc import Sequence

from peft import PrefixTuningConfig, PromptEncoderConfig, get_peft_model
from peft.tuners.p_tuning import PromptEncoderReparameterizationType
from torch import nn

VARIANTS = ("v1_prompt_encoder", "v2_prefix")


def build(
    model: nn.Module,
    *,
    tasks: Sequence[str],
    target_modules: Sequence[str],
    variant: str = "v1_prompt_encoder",
    num_virtual_tokens: int = 128,
    encoder_hidden_size: int | None = None,
    encoder_num_layers: int = 2,
) -> nn.Module:
    """Wrap ``model`` with a trainable prompt; everything else is frozen.

    ``tasks`` and ``target_modules`` are unused: one prompt serves all tasks and no linear
    layer is adapted.

    Args:
        variant: ``v1_prompt_encoder`` | ``v2_prefix``.
        num_virtual_tokens: prompt length (128 in §3).
        encoder_hidden_size: MLP width (v1); ``None`` = the model's hidden size.
        encoder_num_layers: kept for PEFT's config; its MLP head always has 3 linears.

    Returns:
        a ``peft.PeftModel``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"ptuning.variant={variant!r}; use one of {VARIANTS}")
    if num_virtual_tokens < 1:
        raise ValueError(f"ptuning.num_virtual_tokens={num_virtual_tokens}; it must be >= 1")
    if variant == "v1_prompt_encoder":
        hidden = encoder_hidden_size or model.config.hidden_size
        config = PromptEncoderConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=num_virtual_tokens,
            encoder_reparameterization_type=PromptEncoderReparameterizationType.MLP,
            encoder_hidden_size=hidden,
            encoder_num_layers=encoder_num_layers,
            encoder_dropout=0.0,
        )
    else:
        config = PrefixTuningConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=num_virtual_tokens, prefix_projection=False
        )
    return get_peft_model(model, config)
