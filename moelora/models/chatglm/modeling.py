"""ChatGLM-6B (v1) as a native ``transformers`` causal LM (no remote code).

The architecture of THUDM/chatglm-6b, module for module and under its state-dict names
(``transformer.word_embeddings``, ``transformer.layers.N.{input_layernorm,
attention.query_key_value, attention.dense, post_attention_layernorm, mlp.dense_h_to_4h,
mlp.dense_4h_to_h}``, ``transformer.final_layernorm``, ``lm_head``):

* blocks run sequence-first, ``[seq, batch, hidden]`` (``model.batch_axis: 1``);
* ``h = α·LN(x) + Attn(LN(x))`` then ``out = α·LN(h) + MLP(LN(h))`` with α = √(2·28) (the
  residual is the *normalised* input, as in GLM; the original blocks take the layer count for
  α from a default of 28, not from the config, so α = √(2·num_layers) for ChatGLM-6B and
  stays √56 for any other depth);
* the MLP is ``dense_4h_to_h(gelu(dense_h_to_4h(x)))`` with GLM's tanh GeLU;
* 2D rotary positions: the first half of each head dimension is rotated by
  ``position_ids``, the second by ``block_position_ids`` (moelora/models/chatglm/layout.py), with
  the original's fp16-rounded inverse frequencies and tables computed in the weights' dtype;
* the prefix-LM mask, bidirectional over the prompt up to ``<sop>`` (layout.py);
* attention ``eager`` repeats the original arithmetic (query scaled by 1/(√d·(layer+1)),
  scores times (layer+1) in fp32, masked scores −10000, fp32 softmax); ``sdpa`` (default)
  uses ``torch.nn.functional.scaled_dot_product_attention`` on the same mask.

Inputs follow the HF convention (2D padding ``attention_mask``; the cache is a
``transformers`` ``Cache`` in ``[batch, heads, seq, head_dim]``), so ``generate``, peft and the
harness drive it like any causal LM. Without explicit ``position_ids`` the layout is derived
from the tokens; during cached decoding it continues from the last token's ids, kept on the
cache object (``chatglm_last_position_ids``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from moelora.models.chatglm.configuration import ChatGLMConfig
from moelora.models.chatglm.layout import chunk_layout, continue_layout, prefix_lm_allowed

LAST_POSITIONS = "chatglm_last_position_ids"
# The residual scale is α = √(2·ALPHA_LAYERS): the original GLMBlock's ``num_layers`` argument is
# never passed, so it keeps its default of 28 (ChatGLM-6B's depth) whatever the config says.
ALPHA_LAYERS = 28


def gelu(x: torch.Tensor) -> torch.Tensor:
    """GLM's GeLU, 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).

    The original runs this formula as a TorchScript-fused kernel (one pass, fp32 inside);
    ``F.gelu(approximate="tanh")`` is the same formula as one kernel with fp32 internals.
    """
    return F.gelu(x, approximate="tanh")


def rotary_tables(
    position_ids: torch.Tensor, dim: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin, (s, b, 2, 1, dim), for both rows of ``position_ids`` (b, 2, s).

    The inverse frequencies are rounded to fp16, and the angles computed in ``dtype``, as the
    original's ``RotaryEmbedding`` does with its fp16 buffer cast along with the model.
    """
    inv_freq = 1.0 / (10000 ** (torch.arange(0, dim, 2, device=position_ids.device).float() / dim))
    inv_freq = inv_freq.half().to(dtype)
    freqs = position_ids.permute(2, 0, 1).to(dtype)[..., None] * inv_freq  # (s, b, 2, dim/2)
    emb = torch.cat((freqs, freqs), dim=-1)[:, :, :, None, :]
    return emb.cos(), emb.sin()


def attention_mask_for(
    allowed: torch.Tensor, implementation: str, dtype: torch.dtype
) -> torch.Tensor:
    """The mask in the form the attention implementation takes, built once per forward.

    ``eager``: the bool mask itself (the original masks scores with −10000). ``sdpa``: an
    additive bias (0 or the dtype's minimum); a row with no visible key (a padding query)
    sees itself instead, so no fp16 row turns into NaN (padding outputs are never used).
    """
    if implementation == "eager":
        return allowed
    s, total = allowed.shape[-2:]
    empty = ~allowed.any(dim=-1, keepdim=True)  # (b, 1, s, 1)
    key = torch.arange(total, device=allowed.device)
    diagonal = key[None, :] == key[total - s :, None]  # (s, total)
    allowed = allowed | (empty & diagonal)
    bias = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return bias.masked_fill_(~allowed, torch.finfo(dtype).min)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


class ChatGLMAttention(nn.Module):
    """Self-attention with the fused ``query_key_value`` projection (per head: q, k, v)."""

    def __init__(self, config: ChatGLMConfig, layer_idx: int) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.query_key_value = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(
        self,
        hidden_states: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        allowed: torch.Tensor,
        cache: Cache | None,
        use_cache: bool,
    ) -> torch.Tensor:
        """hidden_states: (s, b, h); allowed: (b, 1, s, past + s), the bool mask (eager) or the
        additive bias (sdpa) of :func:`attention_mask_for`."""
        s, b, _ = hidden_states.shape
        mixed = self.query_key_value(hidden_states).view(s, b, self.num_heads, 3 * self.head_dim)
        q, k, v = mixed.split(self.head_dim, dim=-1)  # (s, b, nh, hd)
        cos, sin = rotary  # (s, b, 2, 1, rd)
        q, k = (
            torch.cat(
                [
                    t * cos[:, :, i] + rotate_half(t) * sin[:, :, i]
                    for i, t in enumerate(x.chunk(2, dim=-1))
                ],
                dim=-1,
            )
            for x in (q, k)
        )
        q, k, v = (x.permute(1, 2, 0, 3) for x in (q, k, v))  # (b, nh, s, hd)
        if cache is not None:
            if use_cache:
                k, v = cache.update(k, v, self.layer_idx)
            elif len(cache.layers) > self.layer_idx and cache.layers[self.layer_idx].is_initialized:
                layer = cache.layers[self.layer_idx]  # read-only (training on a fixed prefix)
                k, v = torch.cat([layer.keys, k], dim=-2), torch.cat([layer.values, v], dim=-2)
        if allowed.dtype == torch.bool:
            context = self._eager(q, k, v, allowed)
        else:  # an additive bias: sdpa
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        context = context.permute(2, 0, 1, 3).reshape(s, b, -1)  # (s, b, h)
        return self.dense(context)

    def _eager(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor
    ) -> torch.Tensor:
        """The original ``attention_fn``: layer-scaled scores, −10000 masking, fp32 softmax."""
        coeff = float(self.layer_idx + 1)
        scores = torch.matmul(q / (math.sqrt(self.head_dim) * coeff), k.transpose(-1, -2))
        if not bool(allowed.all()):
            scores = scores.masked_fill(~allowed, -10000.0)
        probs = F.softmax(scores.float() * coeff, dim=-1).to(v.dtype)
        return torch.matmul(probs, v)


class ChatGLMMLP(nn.Module):
    def __init__(self, config: ChatGLMConfig) -> None:
        super().__init__()
        self.dense_h_to_4h = nn.Linear(config.hidden_size, config.inner_hidden_size)
        self.dense_4h_to_h = nn.Linear(config.inner_hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense_4h_to_h(gelu(self.dense_h_to_4h(x)))


class GLMBlock(nn.Module):
    """One GLM layer; residuals from the normalised input, scaled by α (:data:`ALPHA_LAYERS`)."""

    def __init__(self, config: ChatGLMConfig, layer_idx: int) -> None:
        super().__init__()
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layernorm_epsilon)
        self.attention = ChatGLMAttention(config, layer_idx)
        self.post_attention_layernorm = nn.LayerNorm(
            config.hidden_size, eps=config.layernorm_epsilon
        )
        self.mlp = ChatGLMMLP(config)
        self.alpha = (2 * ALPHA_LAYERS) ** 0.5

    def forward(
        self,
        hidden_states: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        allowed: torch.Tensor,
        cache: Cache | None,
        use_cache: bool,
    ) -> torch.Tensor:
        attention_input = self.input_layernorm(hidden_states)
        hidden_states = attention_input * self.alpha + self.attention(
            attention_input, rotary, allowed, cache, use_cache
        )
        mlp_input = self.post_attention_layernorm(hidden_states)
        return mlp_input * self.alpha + self.mlp(mlp_input)


class ChatGLMPreTrainedModel(PreTrainedModel):
    config_class = ChatGLMConfig
    config: ChatGLMConfig
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = True
    _no_split_modules = ["GLMBlock"]
    _supports_sdpa = True
    # the release stores the rotary inverse frequencies, which are recomputed, never loaded
    _keys_to_ignore_on_load_unexpected = [r"rotary_emb\.inv_freq"]


class ChatGLMModel(ChatGLMPreTrainedModel):
    """The transformer: embeddings, GLM blocks, final LayerNorm (no head)."""

    def __init__(self, config: ChatGLMConfig) -> None:
        super().__init__(config)
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(GLMBlock(config, i) for i in range(config.num_layers))
        self.final_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layernorm_epsilon)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.word_embeddings = value

    def special_token_ids(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """Token ids of the layout tokens (bos, [MASK], [gMASK]) found in embeddings, −1 elsewhere.

        For callers that pass ``inputs_embeds`` only (prompt-learning adapters prepend virtual
        token embeddings): a looked-up token is an exact copy of its embedding row.
        """
        ids = torch.full(inputs_embeds.shape[:2], -1, dtype=torch.long, device=inputs_embeds.device)
        weight = self.word_embeddings.weight
        for tid in (
            self.config.bos_token_id,
            self.config.mask_token_id,
            self.config.gmask_token_id,
        ):
            row = weight[tid].to(inputs_embeds.dtype)
            ids[(inputs_embeds.detach() == row).all(dim=-1)] = tid
        return ids

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
    ) -> tuple:
        """Returns (hidden states (s, b, h), cache)."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if self.gradient_checkpointing and self.training:
            use_cache = False
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        b, s = inputs_embeds.shape[:2]
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)
        past = past_key_values.get_seq_length() if past_key_values is not None else 0
        if attention_mask is None:
            attention_mask = torch.ones(b, past + s, dtype=torch.long, device=inputs_embeds.device)
        if attention_mask.dim() != 2 or attention_mask.shape != (b, past + s):
            raise ValueError(
                f"attention_mask must be the 2D padding mask (batch, past + seq) = "
                f"{(b, past + s)}, 1 for tokens and 0 for padding; got "
                f"{tuple(attention_mask.shape)}"
            )
        real = attention_mask.bool()
        last = getattr(past_key_values, LAST_POSITIONS, None) if past > 0 else None
        context_end = torch.zeros(b, dtype=torch.long, device=real.device)  # decoding: none
        if position_ids is None and last is not None:
            position_ids = continue_layout(last, s)
        elif position_ids is None or last is None:
            ids = input_ids if input_ids is not None else self.special_token_ids(inputs_embeds)
            derived, chunk_end = chunk_layout(
                ids,
                real[:, past:],
                bos_token_id=self.config.bos_token_id,
                mask_token_id=self.config.mask_token_id,
                gmask_token_id=self.config.gmask_token_id,
            )
            context_end = past + chunk_end
            position_ids = derived if position_ids is None else position_ids
        if position_ids.shape != (b, 2, s):
            raise ValueError(
                f"position_ids must be (batch, 2, seq) = {(b, 2, s)} (position and "
                f"block position ids); got {tuple(position_ids.shape)}"
            )
        if use_cache:
            setattr(past_key_values, LAST_POSITIONS, position_ids[:, :, -1].clone())
        allowed = attention_mask_for(
            prefix_lm_allowed(real, query_length=s, context_end=context_end),
            self.config._attn_implementation,
            inputs_embeds.dtype,
        )
        rotary = rotary_tables(
            position_ids,
            self.config.hidden_size // (2 * self.config.num_attention_heads),
            self.word_embeddings.weight.dtype,
        )
        hidden_states = inputs_embeds.transpose(0, 1)  # (s, b, h)
        for block in self.layers:
            if self.gradient_checkpointing and self.training:
                hidden_states = self._gradient_checkpointing_func(
                    block.__call__, hidden_states, rotary, allowed, past_key_values, False
                )
            else:
                hidden_states = block(hidden_states, rotary, allowed, past_key_values, use_cache)
        return self.final_layernorm(hidden_states), (past_key_values if use_cache else None)


class ChatGLMForConditionalGeneration(ChatGLMPreTrainedModel, GenerationMixin):
    """ChatGLM-6B with its LM head; registered for ``AutoModelForCausalLM`` (moelora.models.chatglm)."""

    _tied_weights_keys = {"lm_head.weight": "transformer.word_embeddings.weight"}

    def __init__(self, config: ChatGLMConfig) -> None:
        super().__init__(config)
        self.transformer = ChatGLMModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Logits (b, s, vocab), batch-first as the original returns them.

        ``labels`` (b, s): next-token cross-entropy (shifted inside, −100 ignored), computed in
        fp32 as the original does. ``position_ids`` (b, 2, s) may be passed as a keyword; it is
        not a named parameter so that ``generate`` does not invent 1D ones from the padding mask
        (the layout is derived here instead). Other keyword arguments of generic callers
        (``return_dict``, ``output_attentions=False`` …) are accepted and ignored; asking for
        attentions or hidden states is an error.
        """
        position_ids = kwargs.pop("position_ids", None)
        for name in ("output_attentions", "output_hidden_states"):
            if kwargs.get(name):
                raise NotImplementedError(
                    f"{name}=True: the native ChatGLM-6B returns logits, loss and cache only"
                )
        hidden_states, cache = self.transformer(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
        )
        if logits_to_keep:
            hidden_states = hidden_states[-logits_to_keep:]
        logits = self.lm_head(hidden_states).permute(1, 0, 2).contiguous()
        loss = None
        if labels is not None:
            shift_logits = logits[:, :-1].float()
            loss = F.cross_entropy(
                shift_logits.reshape(-1, shift_logits.shape[-1]),
                labels[:, 1:].reshape(-1).to(logits.device),
                ignore_index=-100,
            )
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=cache)
