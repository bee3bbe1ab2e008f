"""Shared fixtures. Tests run offline, on the CPU, with wandb disabled."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models on a small, often shared CPU: one intra-op thread is several times faster than
# two busy-waiting ones. Subprocesses (run.py) inherit it through the environment.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only ``shared/`` folder that sits beside the repository (real PromptCBLUE
    toy examples and specs). Tests that use it say why in their docstring."""
    path = REPO_ROOT.parent / "shared"
    if not path.is_dir():
        pytest.skip("../shared is not present beside the repository")
    return path


# ---- the tiny world every end-to-end test runs in -------------------------------------
# A small MedSynth-8 build (seconds) + its tokenizer, and a randomly initialised tiny Llama
# built from config on top of it. Nothing outside the repository is needed.

TINY_LLAMA = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=1024,
)


def build_tiny_model(tokenizer_dir: Path, out_dir: Path, *, seed: int = 0) -> Path:
    """Save a random tiny Llama (and the tokenizer) as a standard HF model directory."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        **TINY_LLAMA,
    )
    LlamaForCausalLM(config).save_pretrained(str(out_dir))
    tok.save_pretrained(str(out_dir))
    return out_dir


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """(data_dir, model_dir) of a tiny MedSynth-8 and a tiny random Llama."""
    from moelora.data.medsynth import build_tiny_fixture

    root = tmp_path_factory.mktemp("tiny_world")
    data_dir, tokenizer_dir = build_tiny_fixture(root / "medsynth")
    model_dir = build_tiny_model(tokenizer_dir, root / "model")
    return data_dir, model_dir


@pytest.fixture(scope="session")
def tiny_chatglm(tmp_path_factory) -> Path:
    """A tiny ChatGLM-6B directory in the release's layout (moelora/models/chatglm/tiny.py): the
    checkpoint the goldens of tests/golden/chatglm_v1.* were made with."""
    from moelora.models.chatglm.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_chatglm") / "chatglm-6b")


def tiny_overrides(tiny_world, out_dir: Path, *extra: str) -> list[str]:
    """Overrides that point the real config at the tiny world, fast settings."""
    data_dir, model_dir = tiny_world
    return [
        f"paths.root_dir={out_dir}",
        f"data.root={data_dir}",
        "data.prepare=null",
        "model=hf",
        f"model.path={model_dir}",
        "model.dtype=float32",
        "trainer=smoke",
        "logger=none",
        "progress=false",
        "trainer.eval.limit_per_task=2",
        "data.max_target_length=16",
        "data.max_source_length=96",
        "data.max_truncated_fraction=1.0",
        *extra,
    ]


def compose(overrides: list[str]):
    """Compose conf/config.yaml in-process (no Hydra run)."""
    from hydra import compose as _compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        return _compose(config_name="config", overrides=overrides)


@pytest.fixture(scope="session")
def arch_model_dir(tiny_world, tmp_path_factory):
    """``arch_model_dir(arch)``: a saved tiny random model of ``arch`` (tests/tiny_models.py)
    with its fitting tokenizer, built on first use, one per architecture per session."""
    from tests.tiny_models import save_model_dir

    data_dir, _ = tiny_world
    root = tmp_path_factory.mktemp("architectures")
    built: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in built:
            built[arch] = save_model_dir(arch, data_dir, root / arch)
        return built[arch]

    return get


# Greedy smoke runs of the methods that inference and the efficiency measurement rebuild
# (moelora/inference/load.py): trained once per session, read by several test modules.
SMOKE_RUN_METHODS = {
    "lora_full": [],
    "moelora_dense": [],
    "molora": [],
    "moelora_multi_gate": [],
    "lora_single": ["method.single.select_by=loss", "method.single.val_per_task=2"],
}
# Further trained methods that only the loader's reproduction test rebuilds (another experiment).
MORE_RUN_METHODS = {"lora_full_tp": [], "ptuning": ["method.ptuning.num_virtual_tokens=16"]}


def _smoke_runs(tiny_world, out: Path, experiment: str, methods: dict[str, list[str]]) -> dict:
    from moelora.harness.runner import run

    dirs = {}
    for method, extra in methods.items():
        cfg = compose(
            tiny_overrides(
                tiny_world,
                out,
                f"method={method}",
                "trainer.max_steps=2",
                "decoding=greedy",
                f"experiment_name={experiment}",
                *extra,
            )
        )
        run_dir = out / "outputs" / experiment / method / "seed=42"
        run_dir.mkdir(parents=True)
        assert run(cfg, run_dir) == 0, (run_dir / "results.json").read_text()
        dirs[method] = run_dir
    return dirs


@pytest.fixture(scope="session")
def smoke_runs(tiny_world, tmp_path_factory):
    """method → a finished run directory (trainer=smoke, 2 steps, greedy decoding), all under
    ``<root>/outputs/default/``."""
    return _smoke_runs(
        tiny_world, tmp_path_factory.mktemp("smoke_runs"), "default", SMOKE_RUN_METHODS
    )


@pytest.fixture(scope="session")
def more_smoke_runs(tiny_world, tmp_path_factory):
    """LoRA (Full+TP) and P-Tuning runs as :func:`smoke_runs` does (experiment ``more``)."""
    return _smoke_runs(tiny_world, tmp_path_factory.mktemp("more_runs"), "more", MORE_RUN_METHODS)
