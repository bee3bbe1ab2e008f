"""MedSynth-8: determinism, PromptCBLUE format, sizes, caching, tokenizer, gold parsing.

The v0.1 parsers below are an independent re-implementation of docs/evaluation.md §3, written
for these tests from docs/evaluation.md (not imported from the generator), so a target that the
official parser would read differently fails here.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from moelora.data.medsynth import build_dataset, build_tiny_fixture
from moelora.data.medsynth.tokenizer import ANSWER_CUE
from moelora.method.tasks import PAPER_TASKS
from moelora.utils.io import read_jsonl

SCALE = 0.02
EVAL_SCALE = 0.02
TABLE1_TRAIN = {  # paper Table 1, typed in by hand
    "CMeIE": 2828,
    "CHIP-CDN": 2381,
    "CHIP-CDEE": 1562,
    "CHIP-MDCFNPC": 4935,
    "CHIP-CTC": 3622,
    "KUAKE-QIC": 3279,
    "IMCS-V2-MRG": 1799,
    "MedDG": 4964,
}
TASK_TYPES = {
    "CMeIE": "spo_generation",
    "CHIP-CDN": "normalization",
    "CHIP-CDEE": "event_extraction",
    "CHIP-MDCFNPC": "attr_cls",
    "CHIP-CTC": "cls",
    "KUAKE-QIC": "cls",
    "IMCS-V2-MRG": "report_generation",
    "MedDG": "response_generation",
}
MDCFNPC_LABELS = [
    "已有症状疾病或者假设未来可能发生的疾病等",
    "未患有症状疾病",
    "没有回答、不知道、回答不明确或者模棱两可不好推断",
    "无实际意义的不标注或者和病人当前的状态独立不标注",
]
MRG_KEYS = ("主诉", "现病史", "辅助检查", "既往史", "诊断", "建议")


# ------------------------------------------------------------ v0.1 parsers (docs/evaluation.md §3)
def _prenorm(text: str) -> str:
    for a, b in ((":", "："), (",", "，"), (";", "；")):
        text = text.replace(a, b, 100)
    return text


def parse_v01(task: str, text: str, choices: list[str] | None):
    text = _prenorm(text)
    if task == "CMeIE":
        out = []
        for line in text.split("\n"):
            pred = line.split("关系的头尾实体对")[0][2:].strip()
            line = line.replace(f"具有{pred}关系的头尾实体对如下：", "")
            for piece in line.split("。"):
                if "，尾实体为" not in piece:
                    continue
                head, tail = piece.split("，尾实体为")[:2]
                out.append((pred, head.replace("头实体为", "").strip(), tail.strip()))
        return out
    if task == "CHIP-CDN":
        items = [x.strip() for x in text.split("\n")[-1].split("，") if x.strip()]
        kept = []
        for x in items:
            if x in (choices or []) and x not in kept:
                kept.append(x)
        return kept
    if task == "CHIP-CDEE":
        events = []
        for line in text.split("\n")[1:]:
            ev = {"主体词": "", "发生状态": "", "描述词": [], "解剖部位": []}
            for chunk in line.split("；"):
                for key in ev:
                    if chunk.startswith(f"{key}："):
                        val = chunk.replace(f"{key}：", "").strip()
                        ev[key] = (
                            [v.strip() for v in val.split("，") if v.strip()]
                            if key in ("描述词", "解剖部位")
                            else val
                        )
            events.append(ev)
        return events
    if task == "CHIP-MDCFNPC":
        out = []
        for line in text.split("\n")[1:]:
            parts = line.split("：")
            if len(parts) != 2:
                continue
            label = parts[1] if parts[1] in (choices or []) else MDCFNPC_LABELS[3]
            out.append((parts[0].strip(), label))
        return out
    if task == "IMCS-V2-MRG":
        lines = text.strip().split("\n")[1:]
        report = {}
        for key in MRG_KEYS:
            for line in lines:
                if line.startswith(f"{key}："):
                    report[key] = line.strip().split(f"{key}：")[-1].strip()
        return report
    return text.strip()


# ------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return build_dataset(
        tmp_path_factory.mktemp("ms") / "d",
        scale=SCALE,
        eval_scale=EVAL_SCALE,
        seed=3,
        corpus_chars=30_000,
        verbose=False,
    )


@pytest.fixture(scope="module")
def splits(data_dir) -> dict[str, list[dict]]:
    return {s: read_jsonl(data_dir / f"{s}.jsonl") for s in ("train", "dev", "test")}


# ------------------------------------------------------------ tests
def test_byte_identical_rebuild_and_seed_changes_output(tmp_path):
    a = build_dataset(
        tmp_path / "a",
        scale=SCALE,
        eval_scale=EVAL_SCALE,
        seed=1,
        corpus_chars=10_000,
        verbose=False,
    )
    b = build_dataset(
        tmp_path / "b",
        scale=SCALE,
        eval_scale=EVAL_SCALE,
        seed=1,
        corpus_chars=10_000,
        verbose=False,
    )
    c = build_dataset(
        tmp_path / "c",
        scale=SCALE,
        eval_scale=EVAL_SCALE,
        seed=2,
        corpus_chars=10_000,
        verbose=False,
    )
    for f in ("train.jsonl", "dev.jsonl", "test.jsonl", "corpus.txt", "meta.json"):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert (a / "train.jsonl").read_bytes() != (c / "train.jsonl").read_bytes()


def test_fields_types_and_task_names(splits):
    for split, recs in splits.items():
        assert {r["task_dataset"] for r in recs} == set(PAPER_TASKS)
        ids = [r["sample_id"] for r in recs]
        assert ids == [f"{split}-{i}" for i in range(len(recs))]
        for r in recs:
            assert set(r) == {
                "input",
                "target",
                "answer_choices",
                "task_type",
                "task_dataset",
                "sample_id",
            }
            assert isinstance(r["input"], str) and isinstance(r["target"], str) and r["target"]
            assert r["task_type"] == TASK_TYPES[r["task_dataset"]]
            assert r["input"].endswith("\n答：")
            has_choices = r["task_dataset"] in (
                "CMeIE",
                "CHIP-CDN",
                "CHIP-MDCFNPC",
                "CHIP-CTC",
                "KUAKE-QIC",
            )
            if has_choices:
                assert isinstance(r["answer_choices"], list) and all(
                    isinstance(c, str) for c in r["answer_choices"]
                )
            else:
                assert r["answer_choices"] is None


def test_sizes_follow_table1_proportions(splits, data_dir):
    counts = Counter(r["task_dataset"] for r in splits["train"])
    for task, n in TABLE1_TRAIN.items():
        assert counts[task] == round(n * SCALE)
    test_counts = Counter(r["task_dataset"] for r in splits["test"])
    assert test_counts["CHIP-CTC"] == round(1100 * EVAL_SCALE)
    assert test_counts["KUAKE-QIC"] == round(660 * EVAL_SCALE)
    assert test_counts["MedDG"] == round(600 * EVAL_SCALE)
    # imbalance kept: MedDG (4,964) has about 3.2x the examples of CDEE (1,562)
    assert counts["MedDG"] / counts["CHIP-CDEE"] == pytest.approx(4964 / 1562, rel=0.05)
    meta = json.loads((data_dir / "meta.json").read_text(encoding="utf-8"))
    assert meta["counts"]["train"] == dict(counts) | {}
    assert meta["seed"] == 3 and meta["scale"] == SCALE and meta["eval_scale"] == EVAL_SCALE


def test_eval_inputs_do_not_repeat_training_inputs(splits):
    train_inputs = {r["input"] for r in splits["train"]}
    assert not any(r["input"] in train_inputs for r in splits["test"] + splits["dev"])


def test_length_budgets(splits):
    for r in splits["train"] + splits["test"]:
        limit = {"IMCS-V2-MRG": 300, "CHIP-MDCFNPC": 250}.get(r["task_dataset"], 200)
        assert len(r["input"]) <= limit, r["input"]
        assert len(r["target"]) <= 126, r["target"]
        assert not any(c in r["target"] for c in ":,;"), r["target"]


def test_gold_parses_to_meaningful_structures(splits):
    """Every target parses (v0.1 rules) to the structure its format promises."""
    for r in splits["train"] + splits["test"]:
        task, target, choices = r["task_dataset"], r["target"], r["answer_choices"]
        parsed = parse_v01(task, target, choices)
        if task == "CMeIE":
            lines = target.split("\n")
            assert [ln.split("关系的头尾实体对")[0][2:] for ln in lines] == choices
            assert all(p in choices for p, _, _ in parsed)
            assert len(parsed) == target.count("尾实体为")
        elif task == "CHIP-CDN":
            if target == "没有对应的标准化实体":
                assert parsed == []
            else:
                assert parsed and "，".join(parsed) == target
        elif task == "CHIP-CDEE":
            assert target.startswith("上述句子中的临床发现事件如下：\n")
            assert parsed and all(
                e["主体词"] and e["发生状态"] in ("", "否定", "不确定") for e in parsed
            )
        elif task == "CHIP-MDCFNPC":
            assert choices == MDCFNPC_LABELS
            assert len(parsed) == target.count("\n") and len(parsed) >= 1
            mentions = r["input"].split("临床发现实体：")[1].split("\n")[0].split("，")
            assert [e for e, _ in parsed] == mentions
        elif task in ("CHIP-CTC", "KUAKE-QIC"):
            assert parsed == target
            assert (target in choices) != (target == "非上述类型")
        elif task == "IMCS-V2-MRG":
            assert list(parsed) == list(MRG_KEYS) and all(parsed.values())
        else:
            assert parsed == target and target


def test_label_spaces(splits):
    ctc = {r["target"] for s in splits.values() for r in s if r["task_dataset"] == "CHIP-CTC"}
    options = {
        c
        for s in splits.values()
        for r in s
        if r["task_dataset"] == "CHIP-CTC"
        for c in r["answer_choices"]
    }
    assert 20 <= len(options) <= 44 and "非上述类型" not in options
    assert "体征(医生检测）" in options  # the real spelling: ASCII "(" and full-width "）"
    assert "非上述类型" in ctc
    qic_options = {
        c
        for s in splits.values()
        for r in s
        if r["task_dataset"] == "KUAKE-QIC"
        for c in r["answer_choices"]
    }
    assert 7 <= len(qic_options) <= 8


def test_cache_skips_then_rebuilds_on_change(tmp_path, capsys):
    out = tmp_path / "d"
    build_dataset(out, scale=SCALE, eval_scale=EVAL_SCALE, seed=0, corpus_chars=5_000)
    assert "built" in capsys.readouterr().out
    mtime = (out / "train.jsonl").stat().st_mtime_ns
    build_dataset(out, scale=SCALE, eval_scale=EVAL_SCALE, seed=0, corpus_chars=5_000)
    assert "cached" in capsys.readouterr().out
    assert (out / "train.jsonl").stat().st_mtime_ns == mtime
    build_dataset(out, scale=SCALE * 2, eval_scale=EVAL_SCALE, seed=0, corpus_chars=5_000)
    assert "built" in capsys.readouterr().out
    assert len(read_jsonl(out / "train.jsonl")) > 0
    (out / "test.jsonl").write_text("", encoding="utf-8")  # a damaged file is rebuilt too
    build_dataset(out, scale=SCALE * 2, eval_scale=EVAL_SCALE, seed=0, corpus_chars=5_000)
    assert "built" in capsys.readouterr().out


def test_corpus_never_contains_task_formats(data_dir):
    """No task's instruction, options or target format; the answer cue occurs only after a
    textbook question about a fact (``…？答：…``), never at the end of a line."""
    corpus = (data_dir / "corpus.txt").read_text(encoding="utf-8")
    for marker in ("如下：", "选项", "主体词：", "头实体为", "没有对应的标准化实体"):
        assert marker not in corpus
    cued = [line for line in corpus.splitlines() if ANSWER_CUE in line]
    assert cued, "no question-and-answer lines: the answer cue would never be pre-trained"
    for line in cued:
        assert line.count(ANSWER_CUE) == 1 and f"？{ANSWER_CUE}" in line, line
        assert not line.endswith(ANSWER_CUE), line


def test_tokenizer_covers_every_char_and_loads_with_autotokenizer(tmp_path):
    """BPE over a full character alphabet: no character of the data is <unk>, every text
    decodes back to itself, and merges make the prompts shorter than their characters."""
    from transformers import AutoTokenizer

    data_dir, tok_dir = build_tiny_fixture(tmp_path)
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    assert (tok.pad_token, tok.eos_token, tok.bos_token, tok.unk_token) == (
        "<pad>",
        "</s>",
        "<s>",
        "<unk>",
    )
    assert len({tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id}) == 4
    texts = [(data_dir / "corpus.txt").read_text(encoding="utf-8")]
    for s in ("train", "dev", "test"):
        for r in read_jsonl(data_dir / f"{s}.jsonl"):
            texts += [r["input"], r["target"]]
    chars = sorted({c for t in texts for c in t} | {chr(i) for i in range(32, 127)})
    for ch in chars:
        ids = tok(ch, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] != tok.unk_token_id, ch
    n_chars = n_tokens = 0
    for t in texts[1:200]:
        enc = tok(t, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in enc and tok.decode(enc) == t
        n_chars, n_tokens = n_chars + len(t), n_tokens + len(enc)
    assert n_tokens < 0.8 * n_chars


def test_tokenizer_keeps_terms_whole_and_every_prompt_and_answer_token_is_pretrained(tmp_path):
    """A knowledge-base term is tokenised alike in a prompt and in an answer (merges never
    cross a term or a delimiter), and every token of the training answers and of every prompt
    occurs in the base's pre-training text: LoRA keeps embeddings frozen, so an answer token that pre-training never
    saw would keep its random embedding (the cause of corrupted template words). Checked on
    the default build (seconds), the one `make base` pre-trains on."""
    from moelora.data.medsynth.kb import load_kb
    from moelora.data.medsynth.tokenizer import build_tokenizer, lexicon, pretraining_texts

    data_dir = build_dataset(tmp_path / "data", verbose=False)
    tok = build_tokenizer(data_dir, tmp_path / "tokenizer")
    pieces = [
        p
        for p in tok.convert_ids_to_tokens(range(len(tok)))
        if len(p) > 1 and p not in tok.all_special_tokens
    ]
    assert pieces and not [p for p in pieces if any(c in "，。：；、\n" for c in p)]
    kb = load_kb()
    terms = set(lexicon())
    assert {d.name for d in kb.diseases if len(d.name) > 1} <= terms and "非上述类型" in terms
    for name in [d.name for d in kb.diseases[:20]] + ["解剖部位", "知情同意"]:
        alone = tok(name, add_special_tokens=False)["input_ids"]
        for context in (f"诊断{name}为", f"头实体为{name}。", f"{name}和"):
            ids = tok(context, add_special_tokens=False)["input_ids"]
            assert any(ids[i : i + len(alone)] == alone for i in range(len(ids))), (name, context)
    pretrained_text = pretraining_texts(data_dir)
    seen = set()
    for text in pretrained_text:
        seen.update(tok(text, add_special_tokens=False)["input_ids"])
    chars = set("".join(pretrained_text))
    records = {s: read_jsonl(data_dir / f"{s}.jsonl") for s in ("train", "dev", "test")}
    answers = [r["target"] for r in records["train"]]
    assert {c for a in answers for c in a} <= chars
    unseen = {i for a in answers for i in tok(a, add_special_tokens=False)["input_ids"]} - seen
    assert not unseen, tok.convert_ids_to_tokens(sorted(unseen))
    # every prompt token too, the final answer cue included: the answer's first token is
    # predicted from the cue's position (v2.0's base never saw ``答``:
    # docs/notes/2026-12-02-medsynth-v2.1-answer-cue.md)
    prompts = [r["input"] for split in records.values() for r in split]
    unseen = {i for p in prompts for i in tok(p, add_special_tokens=False)["input_ids"]} - seen
    assert not unseen, tok.convert_ids_to_tokens(sorted(unseen))


def test_tiny_fixture_supports_a_random_init_llama(tmp_path):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    _, tok_dir = build_tiny_fixture(tmp_path)
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=len(tok),
        )
    )
    ids = torch.tensor([tok("患者：头疼。\n答：", add_special_tokens=False)["input_ids"]])
    assert model(input_ids=ids).logits.shape == (1, ids.shape[1], len(tok))


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_pretrain_smoke_three_steps(tmp_path, precision):
    """Three steps of the real pre-training loop on a tiny config: the loss is finite and moves,
    with bf16 autocast (the default) and in fp32; the weights stay fp32 either way."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from moelora.data.medsynth.pretrain import BaseConfig, llama_config, pack_corpus, pretrain

    data_dir, tok_dir = build_tiny_fixture(tmp_path)
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    cfg = BaseConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        block_size=32,
        batch_size=4,
        max_steps=3,
        warmup_steps=1,
        lr=1e-2,
        precision=precision,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_config(cfg, tok))
    names = {n.split(".")[-2] for n, _ in model.named_parameters() if n.endswith("proj.weight")}
    assert names == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    blocks = pack_corpus((data_dir / "corpus.txt").read_text(encoding="utf-8"), tok, cfg.block_size)
    log = pretrain(model, blocks, cfg, seed=0, progress=False)
    assert log["steps"] == 3 and all(torch.isfinite(torch.tensor(log["losses"])))
    assert log["losses"][-1] < log["losses"][0]
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_pretrain_rejects_an_unknown_precision(tmp_path):
    from dataclasses import replace

    from moelora.data.medsynth.pretrain import BaseConfig, pretrain

    with pytest.raises(ValueError, match="BaseConfig.precision='fp16'"):
        pretrain(None, None, replace(BaseConfig(), precision="fp16"), seed=0, progress=False)


def test_gold_scores_perfect_with_the_scorer(splits):
    """Gold scored against itself by the project scorer (skipped until it exists)."""
    try:
        from moelora.evaluation import score_records
    except ImportError:
        pytest.skip("moelora.evaluation.score_records is not available yet")
    test = splits["test"]
    scores = score_records(test, [dict(r) for r in test]).scores
    for task in PAPER_TASKS:
        expected = 0.999999995 if task in ("IMCS-V2-MRG", "MedDG") else 1.0
        assert scores[task] == pytest.approx(expected, abs=1e-9), task


@pytest.mark.slow
def test_build_base_end_to_end_and_cached(tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from moelora.data.medsynth import BaseConfig, build_base

    data_dir, _ = build_tiny_fixture(tmp_path)
    cfg = BaseConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        block_size=64,
        batch_size=4,
        max_steps=20,
        warmup_steps=2,
    )
    out = build_base(data_dir, tmp_path / "m", seed=0, config=cfg, progress=False)
    assert "saved" in capsys.readouterr().out
    AutoModelForCausalLM.from_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(out))
    assert (out / "model.safetensors").is_file()
    stamp = json.loads((out / "build_stamp.json").read_text())
    assert stamp["cpu"]["capability"] and "mkl_cbwr" in stamp["cpu"]  # the CPU that built it
    build_base(data_dir, out, seed=0, config=cfg, progress=False)
    assert "cached" in capsys.readouterr().out
    build_base(data_dir, out, seed=1, config=cfg, progress=False)
    assert "saved" in capsys.readouterr().out
