"""ChatGLM-6B's input layout: 2D position ids and the prefix-LM attention mask.

GLM treats everything before ``<sop>`` (the bos token) as a bidirectional context and
generates the block after it left to right. Each token carries two position ids:

* ``position_ids``: its index in the context; every token of the generated block gets the
  index of the prompt's mask token (``[MASK]`` if present, else ``[gMASK]``);
* ``block_position_ids``: 0 in the context, then 1, 2, … from ``<sop>`` on.

The original code builds both, and a boolean ``[batch, 1, seq, seq]`` mask, from unpadded
token lists (its tokenizer's ``_pad``; the model's ``get_masks``/``get_position_ids``) and
pads them on the left. Here they are derived from the token ids and the standard 2D padding
mask (1 = token, 0 = padding) that every HF pipeline passes, so left-padded generation
batches and right-padded training batches both get, for every real token, exactly what the
original computes for that sequence on its own. Padding positions get position 0 and attend
to nothing.
"""

from __future__ import annotations

import torch


def _first_index(
    hit: torch.Tensor, real_index: torch.Tensor, default: torch.Tensor
) -> torch.Tensor:
    """Per row: ``real_index`` at the first True of ``hit`` (b, s), else ``default`` (b,)."""
    found = hit.any(dim=1)
    first = hit.int().argmax(dim=1)
    return torch.where(found, real_index.gather(1, first[:, None])[:, 0], default)


def chunk_layout(
    token_ids: torch.Tensor,
    real: torch.Tensor,
    *,
    bos_token_id: int,
    mask_token_id: int,
    gmask_token_id: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """2D position ids of a chunk that holds a whole prompt (no layout carried over).

    Args:
        token_ids: (b, s) token ids (other values, e.g. -1, for tokens that are none of the
            special tokens; see ``ChatGLMModel.special_token_ids``).
        real: (b, s) bool, True for tokens, False for padding (either side).

    Returns:
        ``position_ids`` (b, 2, s) = stack(position_ids, block_position_ids), and
        ``context_end`` (b,): the chunk index where the bidirectional context ends (that of
        the first ``<sop>``; the whole chunk when it has none, as the original tokenizer does).
    """
    b, s = token_ids.shape
    real_index = (real.long().cumsum(dim=1) - 1).clamp(min=0)  # index among real tokens
    num_real = real.long().sum(dim=1)
    chunk_index = torch.arange(s, device=token_ids.device).expand(b, s)
    is_bos = (token_ids == bos_token_id) & real
    context_length = _first_index(is_bos, real_index, num_real)  # real tokens before <sop>
    context_end = _first_index(is_bos, chunk_index, torch.full_like(num_real, s))
    none = torch.full_like(num_real, -1)
    mask_position = _first_index((token_ids == mask_token_id) & real, real_index, none)
    gmask_position = _first_index((token_ids == gmask_token_id) & real, real_index, none)
    mask_position = torch.where(mask_position >= 0, mask_position, gmask_position)

    in_block = real_index >= context_length[:, None]  # <sop> and after
    position = torch.where(
        in_block & (mask_position[:, None] >= 0), mask_position[:, None], real_index
    )
    block = torch.where(in_block, real_index - context_length[:, None] + 1, 0)
    position_ids = torch.stack([position, block], dim=1) * real[:, None, :]
    return position_ids, context_end


def continue_layout(last_position_ids: torch.Tensor, length: int) -> torch.Tensor:
    """Position ids of ``length`` tokens that extend the generated block (decoding).

    As the original's generation update: the first id stays at the mask position, the
    block id counts on. ``last_position_ids``: (b, 2), those of the last processed token.
    """
    steps = torch.arange(1, length + 1, device=last_position_ids.device)
    position = last_position_ids[:, :1].expand(-1, length)
    block = last_position_ids[:, 1:] + steps
    return torch.stack([position, block], dim=1)


def prefix_lm_allowed(
    real_keys: torch.Tensor, *, query_length: int, context_end: torch.Tensor
) -> torch.Tensor:
    """Which keys each query may attend to: (b, 1, s, past + s) bool.

    A query at absolute index q sees key k when both are real tokens and ``k <= q`` or k lies
    in the bidirectional context (``k < context_end``; keys of a cached past are always
    before it). ``real_keys``: (b, past + s); ``context_end``: (b,) absolute key index.
    """
    total = real_keys.shape[1]
    past = total - query_length
    key_index = torch.arange(total, device=real_keys.device)
    query_index = key_index[past:]
    causal = key_index[None, :] <= query_index[:, None]  # (s, total)
    context = key_index[None, None, :] < context_end[:, None, None]  # (b, 1, total)
    allowed = causal[None] | context
    allowed = allowed & real_keys[:, None, :] & real_keys[:, past:, None]
    return allowed[:, None]
