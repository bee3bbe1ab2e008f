"""The ChatGLM-6B (v1) configuration, with the checkpoint's own field names.

``config.json`` of THUDM/chatglm-6b loads into :class:`ChatGLMConfig` unchanged (its
``auto_map`` is kept and ignored: the model type ``chatglm`` is registered locally, see
:mod:`moelora.models.chatglm`). The standard names the rest of the stack reads
(``num_hidden_layers``, ``intermediate_size``, ``max_position_embeddings``) map onto the
original ones.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig


@strict
class ChatGLMConfig(PreTrainedConfig):
    """ChatGLM-6B v1 hyper-parameters (defaults: the released 6B checkpoint).

    Args:
        vocab_size: rows of ``word_embeddings`` and ``lm_head`` (130528 = 0 image tokens +
            the 130528 pieces of ``ice_text.model``).
        hidden_size: model width (4096).
        num_layers: GLM blocks (28); the residual scale is ``sqrt(2 * num_layers)``.
        num_attention_heads: heads (32); each head splits its dimension in two rotary halves.
        inner_hidden_size: GeLU MLP width (16384).
        layernorm_epsilon: LayerNorm epsilon.
        max_sequence_length: longest position the model was trained with (2048).
        mask_token_id, gmask_token_id: ``[MASK]`` and ``[gMASK]``; the prompt's mask token
            gives every generated token its first position id.
        bos_token_id: ``<sop>``, the start of the generated block; everything before it is the
            bidirectional context.
        eos_token_id: ``<eop>``.
        pad_token_id: ``<pad>`` (3).
        position_encoding_2d: ChatGLM-6B's 2D rotary positions (must be true).
        tie_word_embeddings: ``lm_head`` shares ``word_embeddings`` (GLM's output layer is the
            word embedding). The release's config does not set it, so the original code ties
            them through the library default, and its checkpoint stores the matrix twice.
        quantization_bit, pre_seq_len, prefix_projection: fields of the original config;
            quantisation and the built-in prefix encoder are not part of this port (P-Tuning
            runs through peft), so they must stay 0 / null / false.
    """

    model_type = "chatglm"
    keys_to_ignore_at_inference = ["past_key_values"]
    attribute_map = {
        "num_hidden_layers": "num_layers",
        "intermediate_size": "inner_hidden_size",
        "max_position_embeddings": "max_sequence_length",
        "layer_norm_eps": "layernorm_epsilon",
    }

    vocab_size: int = 130528
    hidden_size: int = 4096
    num_layers: int = 28
    num_attention_heads: int = 32
    inner_hidden_size: int = 16384
    layernorm_epsilon: float = 1e-5
    max_sequence_length: int = 2048
    use_cache: bool = True
    bos_token_id: int | None = 130004
    eos_token_id: int | None = 130005
    mask_token_id: int = 130000
    gmask_token_id: int = 130001
    pad_token_id: int | None = 3
    position_encoding_2d: bool = True
    quantization_bit: int = 0
    pre_seq_len: int | None = None
    prefix_projection: bool = False
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if not self.position_encoding_2d:
            raise ValueError(
                "config.json: position_encoding_2d=false is not ChatGLM-6B; this port "
                "implements the 2D rotary positions only"
            )
        if self.hidden_size % (2 * self.num_attention_heads):
            raise ValueError(
                f"config.json: hidden_size={self.hidden_size} must be a multiple of "
                f"2 * num_attention_heads={2 * self.num_attention_heads}"
            )
        if self.quantization_bit or self.pre_seq_len:
            raise ValueError(
                "config.json: quantization_bit / pre_seq_len are set; quantised checkpoints and "
                "the built-in prefix encoder are not supported. Use the fp16 checkpoint, and "
                "method=ptuning for prompt tuning"
            )
