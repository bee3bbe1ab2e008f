"""Loading the frozen base model and its tokenizer from a local directory.

Nothing is fetched from a hub: ``model.path`` must be a local HF model directory. Problems
(missing folder, missing config or tokenizer files, unknown target modules) are reported
before any weights are loaded. Architectures the harness implements itself (ChatGLM-6B,
moelora/models/chatglm/) are registered with the ``transformers`` auto classes first, so their
checkpoints load without remote code.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.txt")

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def check_model_dir(path: str | Path) -> Path:
    """Fail fast, with the fix, when ``path`` is not a usable local model directory."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"model.path={path} is not a directory. Point model.path at a local HF model folder "
            "(for the embedded default, run `make base`)"
        )
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: config.json is missing; this is not a HF model directory")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise FileNotFoundError(
            f"{path}: no tokenizer files (looked for {', '.join(TOKENIZER_FILES)}); save the "
            "tokenizer next to the model with tokenizer.save_pretrained(path)"
        )
    return path


def native_bf16() -> bool:
    """Whether the current CUDA card computes bf16 natively (compute capability ≥ 8.0: A100,
    H100, RTX 30xx/40xx). ``torch.cuda.is_bf16_supported()`` is true on a V100 as well, where
    bf16 is emulated (slow, no tensor cores), so it is not asked."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0)


def resolve_dtype(name: str) -> torch.dtype:
    """``model.dtype`` → a torch dtype; ``auto``: bf16 on a card with native bf16
    (:func:`native_bf16`), fp16 on an older card (V100), fp32 on the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.bfloat16 if native_bf16() else torch.float16
        return torch.float32
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"model.dtype={name!r}; use one of auto, {', '.join(DTYPES)}") from None


# model types the harness implements itself; their checkpoints' code files are never run
NATIVE_MODEL_TYPES = ("chatglm",)


def register_native_models() -> None:
    """Make ``model_type: chatglm`` resolve to the native ChatGLM-6B (moelora/models/chatglm/)."""
    from moelora.models.chatglm import register

    register()


def _is_native(path: Path) -> bool:
    check_native_version(path)
    return (
        json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type")
        in NATIVE_MODEL_TYPES
    )


def _remote_code_allowed(path: Path, trust_remote_code: bool) -> bool:
    """``trust_remote_code``, except for natively implemented model types (always off)."""
    return trust_remote_code and not _is_native(path)


def load_tokenizer(path: str | Path, *, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    register_native_models()
    path = check_model_dir(path)
    tok = AutoTokenizer.from_pretrained(
        str(path),
        trust_remote_code=_remote_code_allowed(path, trust_remote_code),
        local_files_only=True,
    )
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def load_base_model(
    path: str | Path,
    *,
    dtype: str = "auto",
    trust_remote_code: bool = False,
    gradient_checkpointing: bool = False,
    attn_implementation: str | None = None,
    quantization: str | None = None,
    device: str | torch.device | None = None,
) -> nn.Module:
    """Load a causal LM, frozen, with non-reentrant gradient checkpointing if asked.

    Non-reentrant checkpointing is required: task routing (moelora.method.gate) hands state to
    the layers, which the reentrant variant loses in its no-grad first pass.
    ``attn_implementation`` (``model.attn_implementation``, e.g. ``eager`` | ``sdpa``): None
    leaves the choice to ``transformers``. ``quantization`` (``model.quantization``): None, or
    ``4bit`` | ``8bit`` for a bitsandbytes-quantized base (:func:`quantization_config`),
    loaded straight onto ``device`` (default: the current CUDA device, else the CPU).
    """
    from transformers import AutoModelForCausalLM

    register_native_models()
    path = check_model_dir(path)
    if _is_native(path):
        from moelora.models.chatglm.checkpoint import conversion_hint

        if hint := conversion_hint(path):
            print(hint)
    kwargs: dict[str, Any] = {}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if quantization is not None:
        device = quantization_device(quantization, device)
        kwargs["quantization_config"] = quantization_config(quantization, resolve_dtype(dtype))
        kwargs["device_map"] = {"": device}
    model = AutoModelForCausalLM.from_pretrained(
        str(path),
        dtype=resolve_dtype(dtype),
        trust_remote_code=_remote_code_allowed(path, trust_remote_code),
        local_files_only=True,
        **kwargs,
    )
    model.requires_grad_(False)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    return model


QUANTIZATIONS = ("4bit", "8bit")


def quantization_config(quantization: str, compute_dtype: torch.dtype) -> Any:
    """``model.quantization`` → transformers' ``BitsAndBytesConfig``: ``4bit`` is QLoRA's NF4
    with double quantization, computing in ``compute_dtype`` (the job's); ``8bit`` is
    LLM.int8(). The adapters on top keep fp32 weights (moelora.method.layer.MoELoRALinear,
    peft)."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"model.quantization={quantization!r}; use null (no quantization), "
            f"{' or '.join(QUANTIZATIONS)}"
        )
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def quantization_device(quantization: str, device: str | torch.device | None = None) -> str:
    """The device a ``model.quantization`` base loads onto (``device``, default the current
    CUDA device, else the CPU), after checking that bitsandbytes is installed and runs there.

    Raises:
        ImportError | RuntimeError: naming ``model.quantization`` and the fix.
    """
    if device is None:
        device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    try:
        import bitsandbytes as bnb
    except ImportError as e:
        raise ImportError(
            f"model.quantization={quantization} needs bitsandbytes, which is not importable "
            f"({e}); install it (pip install -e '.[gpu]', or pip install bitsandbytes) or set "
            "model.quantization=null"
        ) from None
    supported = set(getattr(bnb, "supported_torch_devices", ()) or ())
    if device.type not in supported:
        raise RuntimeError(
            f"model.quantization={quantization}: bitsandbytes {bnb.__version__} cannot run on "
            f"{device.type} (it runs on {', '.join(sorted(supported)) or 'no device here'}); "
            "run on a device it supports or set model.quantization=null"
        )
    return str(device)


LARGE_PARAMS = 1e9  # a "real" model: gradient checkpointing on by default, the paper's lr


def estimated_params(config: dict[str, Any]) -> float:
    """Parameters of a decoder from its ``config.json`` fields (embeddings + blocks)."""
    h = config.get("hidden_size") or config.get("n_embd") or 0
    layers = (
        config.get("num_hidden_layers") or config.get("num_layers") or config.get("n_layer") or 0
    )
    ffn = config.get("intermediate_size") or config.get("inner_hidden_size") or 4 * h
    vocab = config.get("vocab_size") or 0
    return float(layers * (4 * h * h + 3 * h * ffn) + vocab * h)


def model_params(path: str | Path) -> float:
    """:func:`estimated_params` of the model folder ``path`` (0 without a config.json)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return 0.0
    return estimated_params(json.loads(config.read_text(encoding="utf-8")))


def resolve_checkpointing(setting: bool | str, path: str | Path) -> bool:
    """``model.gradient_checkpointing``: true | false, or ``auto``: on for a model of at least
    :data:`LARGE_PARAMS` parameters (a 7B model at 1,220 tokens needs it), off below."""
    if setting == "auto":
        return model_params(path) >= LARGE_PARAMS
    if not isinstance(setting, bool):
        raise ValueError(f"model.gradient_checkpointing={setting!r}; use true, false or auto")
    return setting


def adds_bos(tokenizer: Any) -> bool:
    """Whether ``tokenizer``'s own encoding adds exactly a leading BOS to a text (Llama-2/3,
    Mistral: the families trained with one), and nothing else (no EOS at the end)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    plain = tokenizer("a b", add_special_tokens=False)["input_ids"]
    special = tokenizer("a b", add_special_tokens=True)["input_ids"]
    return special == [bos, *plain]


def resolve_special_tokens(setting: bool | str, tokenizer: Any) -> bool:
    """``model.add_special_tokens``: true | false, or ``auto``: :func:`adds_bos` (a BOS where
    the family expects one, e.g. Llama-3's ``<|begin_of_text|>``; nothing for Qwen2)."""
    if setting == "auto":
        return adds_bos(tokenizer)
    if not isinstance(setting, bool):
        raise ValueError(f"model.add_special_tokens={setting!r}; use true, false or auto")
    return setting


# config.json fields of ChatGLM2/3 and the original GLM-4 folders (model_type: chatglm too)
CHATGLM2_FIELDS = ("multi_query_attention", "kv_channels", "ffn_hidden_size", "padded_vocab_size")


def check_native_version(path: str | Path) -> None:
    """Refuse a ChatGLM2/3 or original GLM-4 folder, which says ``model_type: chatglm`` like
    ChatGLM-6B (v1) but is another architecture, with the fix."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return
    fields = json.loads(config.read_text(encoding="utf-8"))
    found = [f for f in CHATGLM2_FIELDS if f in fields]
    if fields.get("model_type") == "chatglm" and found:
        raise ValueError(
            f"{config}: model_type chatglm with the fields {found} is ChatGLM2/ChatGLM3 or the "
            "original GLM-4-9B, not ChatGLM-6B (v1), the only chatglm the harness implements. "
            "For GLM-4 use its transformers-format folder (THUDM/glm-4-9b-hf or glm-4-9b-chat-hf, "
            "model_type glm/glm4) with model=hf; ChatGLM2/3 are not supported"
        )


def model_type(path: str | Path) -> str | None:
    """``model_type`` of the HF config in ``path`` (None when the folder has no config.json)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    return json.loads(config.read_text(encoding="utf-8")).get("model_type")


def model_family(model_cfg: Any) -> str:
    """The preset family of ``model_cfg``: ``model.family``, or, for ``auto``, the family whose
    ``model_types`` holds the model's ``config.json`` ``model_type``."""
    families = model_cfg.get("families") or {}
    where = f"conf/model/{model_cfg.name}.yaml"
    family = model_cfg.get("family") or "auto"
    if family != "auto":
        if family not in families:
            raise KeyError(
                f"model.family={family!r} is not a family of {where}; use auto or one "
                f"of {sorted(families)}, or give method.target_modules as a list"
            )
        return family
    mtype = model_type(model_cfg.path)
    for name, preset in families.items():
        if mtype in (preset.get("model_types") or []):
            return name
    raise KeyError(
        f"{model_cfg.path}/config.json has model_type {mtype!r}, which no family of {where} "
        f"lists (families: { {k: list(v.get('model_types') or []) for k, v in families.items()} }); "
        "set model.family to one of them, add the family with its presets, or give "
        "method.target_modules as a list of module names"
    )


def resolve_target_modules(model_cfg: Any, which: str | Sequence[str]) -> str | list[str]:
    """``method.target_modules`` → what the adapter builders take: ``"all-linear"`` or a list of
    module-name suffixes.

    ``which`` is a list (used as is) or a preset name, looked up in ``model.target_modules``
    (``all``, for every architecture), then in the presets of the model's family
    (``model.families.<family>``, e.g. ``qkv`` for the attention-only ablation; see
    :func:`model_family`)."""
    if not isinstance(which, str):
        return list(which)
    table = model_cfg.target_modules
    if which in table:
        value = table[which]
        return value if isinstance(value, str) else list(value)
    where = f"conf/model/{model_cfg.name}.yaml"
    if not model_cfg.get("families"):
        raise KeyError(
            f"method.target_modules={which!r} is not defined for model "
            f"{model_cfg.name}; choose one of {list(table)} ({where}) or give a list"
        )
    family = model_family(model_cfg)
    presets = {k: v for k, v in model_cfg.families[family].items() if k != "model_types"}
    if which not in presets:
        raise KeyError(
            f"method.target_modules={which!r} is neither a preset of {where} "
            f"({list(table)}) nor of its family {family!r} ({list(presets)}); choose "
            "one of those or give a list"
        )
    return list(presets[which])
