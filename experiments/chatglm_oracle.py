"""Oracle for the native ChatGLM-6B port (issue #15): the original code, run side by side.

The original ``modeling_chatglm.py``, ``configuration_chatglm.py`` and
``tokenization_chatglm.py`` of THUDM/chatglm-6b (and ``quantization.py``, which the modeling
file imports) need transformers 4.23-4.33, so they run in a separate, throwaway environment,
never in the project's::

    python3 -m venv /tmp/oracle-venv
    /tmp/oracle-venv/bin/pip install torch==2.13.0      # CPU build
    /tmp/oracle-venv/bin/pip install transformers==4.33.3 tokenizers==0.13.3 sentencepiece
    GIT_LFS_SKIP_SMUDGE=1 git clone https://huggingface.co/THUDM/chatglm-6b /tmp/chatglm-6b-code

Then, from the repository root, with the project's environment:

    # regenerate tests/golden/chatglm_v1.{json,safetensors} (review the diff, say why in the commit)
    python experiments/chatglm_oracle.py goldens --original /tmp/chatglm-6b-code \\
        --oracle-python /tmp/oracle-venv/bin/python
    # forward-pass speed, native vs original, alternating in one run (one thread each;
    # a ratio of medians, meant for an otherwise idle machine)
    python experiments/chatglm_oracle.py bench --original /tmp/chatglm-6b-code \\
        --oracle-python /tmp/oracle-venv/bin/python

Both commands build the tiny checkpoint with project code (moelora/models/chatglm/tiny.py) in a
temporary folder, copy the three original files next to it there (they never enter the
repository) and start this same script as a worker under the oracle's Python, which loads
the checkpoint with ``trust_remote_code=True``. The worker part imports nothing from the
project, so it runs under transformers 4.33.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ORIGINAL_FILES = (
    "modeling_chatglm.py",
    "configuration_chatglm.py",
    "tokenization_chatglm.py",
    "quantization.py",
)  # imported by modeling_chatglm.py
REPO_ROOT = Path(__file__).resolve().parents[1]
GOLDEN_DIR = REPO_ROOT / "tests" / "golden"
GOLDEN_NAME = "chatglm_v1"

# Tokenizer cases: Chinese, English, whitespace-heavy, newline-heavy, mixed, and the edges
# (bytes outside the vocabulary, literal special tokens, punctuation the 4.33 decoder cleans up).
TEXTS = (
    "患者咳嗽三天，伴有发热。",
    "请根据患者的症状给出诊断：头痛、恶心、呕吐。",
    "The patient reports a persistent cough and mild fever.",
    "Hello , world ! Isn 't it ?",
    "two  spaces   three    four     five          ten",
    "\tindented\t\ttabs\n  and  mixed \t whitespace ",
    "line one\nline two\n\nblank line above\n\n\n",
    "\n\n头痛\n恶心\n",
    "混合 mixed 文本 text 123 4567",
    "emoji 😀 and rare 龘 characters",
    "问：<sop>答 [MASK] 之后 <eop> end",
    " leading and trailing spaces  ",
)
# Left-padded prompt batch (logits and greedy generation).
PROMPTS = ("患者咳嗽三天，伴有发热。诊断：", "Diagnosis:", "头痛\n恶心\n请给出诊断  结果：")
# Right-padded training batch, built the way moelora/data/encoding.py does: prompt + [gMASK] + <sop>,
# then answer + <eop>, labels on the answer only.
TRAIN_PAIRS = (
    ("患者咳嗽三天，诊断：", "急性支气管炎"),
    ("Diagnosis:", "acute bronchitis"),
    ("头痛\n恶心", "偏头痛"),
)
MAX_NEW_TOKENS = 12
IMAGE_TOKENS_VARIANT = 16  # a second tokenizer with a non-zero num_image_tokens
BENCH_SIZES = {
    "hidden_size": 512,
    "num_layers": 4,
    "num_attention_heads": 8,
    "inner_hidden_size": 2048,
    "max_sequence_length": 512,
}
BENCH_BATCH = (4, 128)  # prompts x tokens of the longest (the others shorter, left-padded)


# ---- worker side: runs under either environment, imports nothing from the project ---------
def _train_batch(tok):
    rows, labels = [], []
    for prompt, answer in TRAIN_PAIRS:
        p = tok(prompt, add_special_tokens=True)["input_ids"]
        a = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        rows.append(p + a)
        labels.append([-100] * len(p) + a)
    width = max(len(r) for r in rows)
    pad = tok.pad_token_id
    mask = [[1] * len(r) + [0] * (width - len(r)) for r in rows]
    return (
        [r + [pad] * (width - len(r)) for r in rows],
        [lab + [-100] * (width - len(lab)) for lab in labels],
        mask,
    )


def original_goldens(ckpt: Path, out: Path) -> None:
    """Worker (oracle environment): every golden from the original code."""
    import torch
    import transformers
    from safetensors.torch import save_file
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(ckpt), trust_remote_code=True)
    tok16 = AutoTokenizer.from_pretrained(
        str(ckpt), trust_remote_code=True, num_image_tokens=IMAGE_TOKENS_VARIANT
    )
    model = AutoModel.from_pretrained(str(ckpt), trust_remote_code=True).float().eval()
    texts = []
    for text in TEXTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        with_special = tok(text)["input_ids"]
        texts.append(
            {
                "text": text,
                "tokens": tok.tokenize(text),
                "ids": ids,
                "ids_special": with_special,
                "ids_image_tokens": tok16(text, add_special_tokens=False)["input_ids"],
                "decode": tok.decode(ids),
                "decode_special": tok.decode(with_special),
                "decode_skip": tok.decode(with_special, skip_special_tokens=True),
            }
        )
    batch = tok(list(PROMPTS), padding=True, return_tensors="pt")  # left-padded, 4D bool mask
    ids, labels, mask = _train_batch(tok)
    tensors = {}
    with torch.no_grad():
        tensors["prompt_logits"] = model(**batch).logits.float().contiguous()
        generated = model.generate(**batch, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
        train = model(input_ids=torch.tensor(ids), labels=torch.tensor(labels))
        tensors["train_logits"] = train.logits.float().contiguous()
    save_file(tensors, str(out.with_suffix(".safetensors")))
    result = {
        "oracle": {"transformers": transformers.__version__, "torch": torch.__version__},
        "special_ids": {
            name: tok.convert_tokens_to_ids(t)
            for name, t in [
                ("mask", "[MASK]"),
                ("gmask", "[gMASK]"),
                ("sop", "<sop>"),
                ("eop", "<eop>"),
                ("pad", "<pad>"),
            ]
        },
        "texts": texts,
        "prompts": {
            "texts": list(PROMPTS),
            "input_ids": batch["input_ids"].tolist(),
            "position_ids": batch["position_ids"].tolist(),
            "attention_mask": batch["attention_mask"].tolist(),
        },
        "generation": {"max_new_tokens": MAX_NEW_TOKENS, "sequences": generated.tolist()},
        "train": {
            "pairs": [list(p) for p in TRAIN_PAIRS],
            "input_ids": ids,
            "labels": labels,
            "padding_mask": mask,
            "loss": float(train.loss),
        },
    }
    out.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def bench_worker(ckpt: Path, native: bool, attn: str | None = None) -> None:
    """Worker: times forward passes on a fixed left-padded batch when asked on stdin."""
    import torch

    torch.set_num_threads(1)
    if native:
        sys.path.insert(0, str(REPO_ROOT))
        from moelora.models.chatglm import register

        register()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(ckpt))
        model = AutoModelForCausalLM.from_pretrained(
            str(ckpt), dtype=torch.float32, attn_implementation=attn
        )
    else:
        from transformers import AutoModel, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(ckpt), trust_remote_code=True)
        model = AutoModel.from_pretrained(str(ckpt), trust_remote_code=True).float()
    model.eval()
    batch_size, length = BENCH_BATCH
    ids = tok("患者咳嗽三天伴有发热头痛恶心呕吐请给出诊断" * 40, add_special_tokens=False)[
        "input_ids"
    ]
    prompts = [tok.decode(ids[: length - 2 - 7 * i]) for i in range(batch_size)]
    batch = tok(prompts, padding=True, return_tensors="pt")
    print(json.dumps({"ready": True, "shape": list(batch["input_ids"].shape)}), flush=True)
    for line in sys.stdin:
        n = int(line)
        times = []
        with torch.no_grad():
            for _ in range(n):
                t0 = time.perf_counter()
                model(**batch, use_cache=False)
                times.append(time.perf_counter() - t0)
        print(json.dumps(times), flush=True)


# ---- driver side: the project's environment ----------------------------------------------
def _stage(original: Path, sizes: dict[str, int] | None, tmp: Path) -> Path:
    sys.path.insert(0, str(REPO_ROOT))
    from moelora.models.chatglm.tiny import build_tiny_checkpoint

    missing = [f for f in ORIGINAL_FILES if not (original / f).is_file()]
    if missing:
        raise SystemExit(
            f"--original {original}: missing {missing}; point it at a checkout of "
            "THUDM/chatglm-6b (the code files are enough)"
        )
    ckpt = build_tiny_checkpoint(tmp / "ckpt", sizes=sizes)
    for name in ORIGINAL_FILES:
        shutil.copy2(original / name, ckpt / name)
    return ckpt


def _worker_env() -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_MODULES_CACHE": str(Path(tempfile.gettempdir()) / "chatglm-oracle-modules"),
    }


def make_goldens(original: Path, oracle_python: str, out_dir: Path) -> None:
    from moelora.models.chatglm.tiny import fixture_digest

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = _stage(original, None, Path(tmp))
        raw = Path(tmp) / f"{GOLDEN_NAME}.json"
        subprocess.run(
            [oracle_python, __file__, "worker-goldens", "--ckpt", str(ckpt), "--out", str(raw)],
            check=True,
            env=_worker_env(),
        )
        result = json.loads(raw.read_text(encoding="utf-8"))
        result["fixture"] = fixture_digest(ckpt)
        result["command"] = (
            "python experiments/chatglm_oracle.py goldens --original "
            "<THUDM/chatglm-6b checkout> --oracle-python <transformers 4.33 python>"
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(raw.with_suffix(".safetensors"), out_dir / f"{GOLDEN_NAME}.safetensors")
        (out_dir / f"{GOLDEN_NAME}.json").write_text(
            json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
        )
    print(f"[oracle] goldens written to {out_dir}/{GOLDEN_NAME}.{{json,safetensors}}")


def bench(
    original: Path, oracle_python: str, rounds: int, per_round: int, attn: str | None = None
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = _stage(original, BENCH_SIZES, Path(tmp))
        workers = {}
        for name, python in (("original", oracle_python), ("native", sys.executable)):
            args = [python, __file__, "worker-bench", "--ckpt", str(ckpt)]
            if name == "native":
                args += ["--native"] + (["--attn", attn] if attn else [])
            proc = subprocess.Popen(
                args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_worker_env()
            )
            ready = json.loads(proc.stdout.readline())
            workers[name] = proc
        times: dict[str, list[float]] = {"original": [], "native": []}
        for r in range(rounds + 1):  # round 0 is a warm-up, discarded
            for name in ("native", "original") if r % 2 else ("original", "native"):
                workers[name].stdin.write(f"{per_round}\n")
                workers[name].stdin.flush()
                got = json.loads(workers[name].stdout.readline())
                if r:
                    times[name] += got
        for proc in workers.values():
            proc.stdin.close()
            proc.wait()
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "batch": ready["shape"],
        "sizes": BENCH_SIZES,
        "forwards_each": len(times["native"]),
        "original_ms": 1000 * med["original"],
        "native_ms": 1000 * med["native"],
        "ratio_native_over_original": med["native"] / med["original"],
    }
    print(json.dumps(result, indent=1))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("goldens", "bench"):
        p = sub.add_parser(name)
        p.add_argument(
            "--original",
            type=Path,
            required=True,
            help="folder holding the original THUDM/chatglm-6b code files",
        )
        p.add_argument(
            "--oracle-python",
            required=True,
            help="python of the throwaway environment with transformers 4.33",
        )
        if name == "goldens":
            p.add_argument("--out", type=Path, default=GOLDEN_DIR)
        else:
            p.add_argument("--rounds", type=int, default=10)
            p.add_argument("--per-round", type=int, default=5)
            p.add_argument(
                "--attn",
                choices=("eager", "sdpa"),
                default=None,
                help="the native model's attention implementation (default: its own)",
            )
    w = sub.add_parser("worker-goldens")
    w.add_argument("--ckpt", type=Path, required=True)
    w.add_argument("--out", type=Path, required=True)
    b = sub.add_parser("worker-bench")
    b.add_argument("--ckpt", type=Path, required=True)
    b.add_argument("--native", action="store_true")
    b.add_argument("--attn", default=None)
    args = parser.parse_args(argv)
    if args.cmd == "goldens":
        make_goldens(args.original, args.oracle_python, args.out)
    elif args.cmd == "bench":
        bench(args.original, args.oracle_python, args.rounds, args.per_round, args.attn)
    elif args.cmd == "worker-goldens":
        original_goldens(args.ckpt, args.out)
    else:
        bench_worker(args.ckpt, args.native, args.attn)


if __name__ == "__main__":
    main()
