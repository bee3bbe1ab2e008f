"""docs/library.md runs: its Python blocks, in order, on a tiny Qwen2 model saved where the
page names its base model (the page cannot rot)."""

from __future__ import annotations

import re

from tests.conftest import REPO_ROOT
from tests.tiny_models import _bpe_tokenizer, build_model

PAGE = REPO_ROOT / "docs" / "library.md"
BASE = "Qwen/Qwen2.5-0.5B"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_quick_start_runs(tmp_path, monkeypatch, capsys):
    texts = ["fever and cough: influenza", "ibuprofen: 400 mg", "rash: eczema"] * 4
    tokenizer = _bpe_tokenizer(texts, "qwen2")
    base_dir = tmp_path / "tiny-qwen2"
    build_model("qwen2", tokenizer).save_pretrained(str(base_dir))
    tokenizer.save_pretrained(str(base_dir))
    monkeypatch.chdir(tmp_path)

    text = PAGE.read_text(encoding="utf-8")
    blocks = python_blocks(text)
    assert len(blocks) == 4 and all(BASE in b or "base" in b for b in blocks[:1])
    namespace: dict = {}
    for block in blocks:
        exec(compile(block.replace(BASE, str(base_dir)), str(PAGE), "exec"), namespace)
    out = capsys.readouterr().out
    print(out)  # shown with -s: the quick start's own output

    assert "trainable params:" in out
    assert (tmp_path / "moelora-adapter" / "adapter_model.safetensors").is_file()
    assert sorted(p.name for p in (tmp_path / "task-adapters").iterdir()) == ["diagnosis", "dosage"]
    assert f"vllm serve {base_dir} --enable-lora --lora-modules" in out
    merged = namespace["diagnosis_model"]
    assert type(merged).__name__ == "Qwen2ForCausalLM" and not hasattr(merged, "moelora_router")
    # the served command of the page is the one export prints (for the page's base and tasks)
    shown = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1)
    assert "--lora-modules diagnosis=task-adapters/diagnosis" in shown
    assert "dosage=task-adapters/dosage --max-loras 2 --max-lora-rank 16" in shown
    assert "--max-loras 2 --max-lora-rank 16" in namespace["exported"].vllm_command
