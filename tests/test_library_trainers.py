"""MOELoRA inside the usual trainers: HF ``Trainer`` and TRL's ``SFTTrainer`` train a tiny
MOELoRA model with gradient checkpointing and gradient accumulation (task ids through
``MoeLoraDataCollator``), and the adapter they leave loads with ``from_pretrained`` and
reproduces their logits (docs/library.md)."""

from __future__ import annotations

import pytest
import torch

from moelora import MoeLoraConfig, MoeLoraDataCollator, MoeLoraModel, get_moelora_model
from tests.tiny_models import _bpe_tokenizer, build_model

TASKS = ["diagnosis", "dosage"]
TEXTS = {
    "diagnosis": ["fever and cough: influenza", "rash and itch: eczema", "chest pain: angina"],
    "dosage": ["ibuprofen: 400 mg", "amoxicillin: 500 mg", "paracetamol: 1 g"],
}


@pytest.fixture(scope="module")
def tokenizer():
    return _bpe_tokenizer([t for texts in TEXTS.values() for t in texts] * 4, "qwen2")


def _examples(tokenizer, *, names: bool) -> list[dict]:
    out = []
    for task_id, task in enumerate(TASKS):
        for text in TEXTS[task]:
            ids = tokenizer(text)["input_ids"]
            out.append(
                {"input_ids": ids, "labels": list(ids)}
                | ({"task": task} if names else {"task_ids": task_id})
            )
    return out


def _model(tokenizer) -> MoeLoraModel:
    config = MoeLoraConfig(
        tasks=TASKS, target_modules=["q_proj", "v_proj", "down_proj"], num_experts=2, rank=4
    )
    return get_moelora_model(build_model("qwen2", tokenizer, seed=0), config)


def _gate(model: MoeLoraModel) -> torch.Tensor:
    return model.router.gate.w_t.weight.detach().clone()


def _round_trip(model: MoeLoraModel, tokenizer, tmp_path) -> None:
    """Save, load into a fresh base, compare logits per task; the training moved the gate."""
    model.eval()
    model.save_pretrained(tmp_path / "adapter")
    loaded = MoeLoraModel.from_pretrained(
        build_model("qwen2", tokenizer, seed=0), tmp_path / "adapter"
    )
    batch = MoeLoraDataCollator(tokenizer, tasks=TASKS)(_examples(tokenizer, names=True))
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "task_ids")}
    with torch.no_grad():
        want = model(**inputs).logits
        torch.testing.assert_close(loaded(**inputs).logits, want, rtol=0, atol=0)


def test_collator_carries_task_ids_and_pads(tokenizer):
    examples = _examples(tokenizer, names=True)
    batch = MoeLoraDataCollator(tokenizer, tasks=TASKS)(examples)
    assert batch["task_ids"].tolist() == [0, 0, 0, 1, 1, 1]
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    short = min(range(6), key=lambda i: len(examples[i]["input_ids"]))
    n = len(examples[short]["input_ids"])
    assert (batch["labels"][short, n:] == -100).all() and (
        batch["attention_mask"][short, n:] == 0
    ).all()
    by_id = MoeLoraDataCollator(tokenizer, tasks=TASKS)(_examples(tokenizer, names=False))
    assert torch.equal(by_id["task_ids"], batch["task_ids"])
    with pytest.raises(KeyError, match="example 0 has neither 'task'"):
        MoeLoraDataCollator(tokenizer, tasks=TASKS)([{"input_ids": [1, 2]}])
    with pytest.raises(KeyError, match="unknown"):
        MoeLoraDataCollator(tokenizer, tasks=TASKS)([{"input_ids": [1], "task": "unknown"}])


# What both trainers get: checkpointing and gradient accumulation, no checkpoint files.
TRAINING = dict(
    max_steps=3,
    per_device_train_batch_size=2,
    gradient_accumulation_steps=2,
    gradient_checkpointing=True,
    learning_rate=5e-2,
    logging_steps=1,
    save_strategy="no",
    report_to=[],
    use_cpu=True,
    seed=0,
)


def test_hf_trainer_with_checkpointing_and_accumulation(tokenizer, tmp_path):
    from transformers import Trainer, TrainingArguments

    model = _model(tokenizer)
    before = _gate(model)
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        **TRAINING,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=_examples(tokenizer, names=False),
        data_collator=MoeLoraDataCollator(tokenizer, tasks=TASKS),
    )
    result = trainer.train()
    assert model.model.model.gradient_checkpointing  # switched on through the wrapper
    assert torch.isfinite(torch.tensor(result.training_loss))
    assert not torch.allclose(_gate(model), before)  # the gate trained under checkpointing
    _round_trip(model, tokenizer, tmp_path)


def test_trl_sft_trainer_with_checkpointing_and_accumulation(tokenizer, tmp_path):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model = _model(tokenizer)
    before = _gate(model)
    args = SFTConfig(
        output_dir=str(tmp_path / "out"),
        **TRAINING,
        bf16=False,  # SFTConfig's default autocasts in bf16 (and leaves the forward so wrapped)
        remove_unused_columns=False,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(_examples(tokenizer, names=True)),
        processing_class=tokenizer,
        data_collator=MoeLoraDataCollator(tokenizer, tasks=TASKS),
    )
    result = trainer.train()
    assert model.model.model.gradient_checkpointing
    assert torch.isfinite(torch.tensor(result.training_loss))
    assert not torch.allclose(_gate(model), before)
    _round_trip(model, tokenizer, tmp_path)
