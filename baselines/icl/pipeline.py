"""In-context learning pipeline (docs/methods.md §2): no training, demonstrations from the same
task's training split, answered by a local model or an OpenAI-compatible endpoint.

``icl.demo_mode: fixed_per_task`` (default) packs one demonstration set per task and seed,
against the task's longest test query (cut to half the budget), and shares it by all of the
task's test examples (a longer query keeps fewer of them, at least ``min_demos``, cut to fit);
``per_example`` packs afresh for every test example (RNG seeded by seed, task and
sample id). The output goes through the same scoring as every fine-tuned method.
"""

from __future__ import annotations

import dataclasses
import random
import time
from pathlib import Path
from typing import Any

from baselines.icl.backends import IclRequest, LocalHFBackend, OpenAICompatibleBackend
from baselines.icl.packing import (
    Packing,
    PackingRules,
    ProxyCounter,
    TokenCounter,
    TokenizerCounter,
    demo_text,
    effective_budget,
    fit_query,
    fit_shared,
    join_prompt,
    pack,
    reference_query,
    with_answer_cue,
)
from moelora.engine.generation import GenerationResult
from moelora.harness.context import PipelineOutput, RunContext
from moelora.models.loading import resolve_special_tokens
from moelora.utils.io import write_jsonl

PROMPTS_NAME = "icl_prompts.jsonl"
# Chat framing per message (role markers etc.) in OpenAI-style serving, counted generously.
CHAT_TOKENS_PER_MESSAGE = 8


def build_requests(
    test: list[dict[str, Any]],
    train: list[dict[str, Any]],
    *,
    counter: TokenCounter,
    rules: PackingRules,
    demo_mode: str,
    seed: int,
) -> tuple[list[IclRequest], list[dict[str, Any]]]:
    """Pack demonstrations for every test record (§2.1).

    Returns:
        the requests (test order) and one log row per request (sample id, task, demo ids,
        prompt tokens, fallback / truncation flags).
    """
    if demo_mode not in ("fixed_per_task", "per_example"):
        raise ValueError(f"icl.demo_mode={demo_mode!r}; use 'fixed_per_task' or 'per_example'")
    pools: dict[str, list[dict[str, Any]]] = {}
    for r in train:
        pools.setdefault(r["task_dataset"], []).append(r)
    queries = [fit_query(r["input"], counter, rules) for r in test]

    shared: dict[str, Packing] = {}
    if demo_mode == "fixed_per_task":
        by_task: dict[str, list[str]] = {}
        for r, (q, _) in zip(test, queries):
            by_task.setdefault(r["task_dataset"], []).append(q)
        for t, qs in sorted(by_task.items()):
            shared[t] = pack(
                pools.get(t, []),
                reference_query(qs, counter, rules),
                counter=counter,
                rules=rules,
                rng=random.Random(f"{seed}:{t}"),
            )

    requests, rows = [], []
    for r, (query, query_cut) in zip(test, queries):
        t = r["task_dataset"]
        if demo_mode == "fixed_per_task":
            packing = shared[t]
            demos, cut = fit_shared(packing.demos, query, counter, rules)
            fallback = packing.fallback or cut
        else:
            packing = pack(
                pools.get(t, []),
                query,
                counter=counter,
                rules=rules,
                rng=random.Random(f"{seed}:{t}:{r['sample_id']}"),
            )
            demos, fallback = packing.demos, packing.fallback
        texts = [demo_text(d) for d in demos]
        prompt = join_prompt(texts, query)
        requests.append(
            IclRequest(
                record=r,
                prompt=prompt,
                query=query,
                demos=[(with_answer_cue(d["input"]), d["target"]) for d in demos],
            )
        )
        rows.append(
            {
                "sample_id": r["sample_id"],
                "task_dataset": t,
                "demo_ids": [d.get("sample_id") for d in demos],
                "n_demos": len(demos),
                "prompt_tokens": counter.count(prompt),
                "fallback": fallback,
                "query_truncated": query_cut,
            }
        )
    return requests, rows


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by_task: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_task.setdefault(row["task_dataset"], []).append(row)
    return {
        t: {
            "n": len(rs),
            "demos_mean": sum(r["n_demos"] for r in rs) / len(rs),
            "demos_min": min(r["n_demos"] for r in rs),
            "demos_max": max(r["n_demos"] for r in rs),
            "prompt_tokens_max": max(r["prompt_tokens"] for r in rs),
            "fallback": sum(r["fallback"] for r in rs),
            "query_truncated": sum(r["query_truncated"] for r in rs),
        }
        for t, rs in sorted(by_task.items())
    }


def pipeline(ctx: RunContext) -> PipelineOutput:
    """Answer the test split by in-context learning with the configured backend."""
    icfg = ctx.cfg.method.icl
    decoding = ctx.decoding()
    if icfg.get("max_new_tokens"):
        decoding = dataclasses.replace(decoding, max_new_tokens=int(icfg.max_new_tokens))
    bounds = dict(
        min_demos=int(icfg.min_demos),
        max_demos=int(icfg.max_demos),
        max_candidates=int(icfg.max_candidates),
    )
    model = None
    backend: LocalHFBackend | OpenAICompatibleBackend
    if icfg.backend == "local_hf":
        model, tokenizer = ctx.load_base()
        max_context = icfg.max_context_tokens or _model_context(model)
        counter: TokenCounter = TokenizerCounter(
            tokenizer,
            add_special_tokens=resolve_special_tokens(ctx.cfg.model.add_special_tokens, tokenizer),
        )
        prompt_room = (
            effective_budget(int(max_context), float(icfg.local.margin)) - decoding.max_new_tokens
        )
        encoder = dataclasses.replace(ctx.encoder(tokenizer), max_source_length=prompt_room)
        backend = LocalHFBackend(
            model,
            encoder,
            device=ctx.accelerator.device,
            model_name=str(ctx.cfg.model.path),
            chat_template=bool(icfg.local.chat_template),
            progress=bool(ctx.cfg.progress),
        )
        rules = PackingRules(budget=prompt_room - backend.template_overhead(counter), **bounds)
    elif icfg.backend == "openai_compatible":
        o = icfg.openai
        max_context = icfg.max_context_tokens or o.context_tokens
        counter = ProxyCounter()
        cache = Path(o.cache_path) if o.cache_path else ctx.run_dir / "icl_cache.jsonl"
        backend = OpenAICompatibleBackend(
            base_url=o.base_url,
            model=o.model,
            api_key_env=o.api_key_env,
            cache_path=cache,
            message_layout=icfg.message_layout,
            max_concurrency=int(o.max_concurrency),
            max_retries=int(o.max_retries),
            retry_base_delay=float(o.retry_base_delay),
            retry_max_delay=float(o.retry_max_delay),
            timeout=float(o.timeout),
        )
        multi = icfg.message_layout == "multi_turn"
        rules = PackingRules(
            budget=effective_budget(int(max_context), float(o.margin))
            - decoding.max_new_tokens
            - CHAT_TOKENS_PER_MESSAGE
            - 3,
            per_demo_overhead=2 * CHAT_TOKENS_PER_MESSAGE if multi else 0,
            **bounds,
        )
    else:
        raise ValueError(f"icl.backend={icfg.backend!r}; use 'local_hf' or 'openai_compatible'")

    test = ctx.splits["test"]
    requests, rows = build_requests(
        test,
        ctx.splits["train"],
        counter=counter,
        rules=rules,
        demo_mode=icfg.demo_mode,
        seed=int(ctx.cfg.seed),
    )
    write_jsonl(ctx.run_dir / PROMPTS_NAME, rows)
    ctx.logger.log({"icl/demos_mean": sum(r["n_demos"] for r in rows) / max(1, len(rows))}, 0)
    t0 = time.perf_counter()
    texts = backend.generate_many(requests, decoding=decoding, seed=int(ctx.cfg.seed))
    seconds = time.perf_counter() - t0
    predictions = [{**r, "target": text} for r, text in zip(test, texts)]
    generation = getattr(backend, "generation", None) or GenerationResult(
        predictions, seconds, seconds / max(1, len(predictions))
    )
    extra = {
        "icl": {
            "backend": backend.name,
            "model": backend.model_name,
            "demo_mode": icfg.demo_mode,
            "message_layout": icfg.message_layout,
            "max_context_tokens": int(max_context),
            "prompt_budget": rules.budget,
            "max_new_tokens": decoding.max_new_tokens,
            "token_counter": type(counter).__name__,
            "per_task": _summary(rows),
            "stats": dict(backend.stats),
        }
    }
    return PipelineOutput(predictions=predictions, model=model, generation=generation, extra=extra)


def _model_context(model: Any) -> int:
    n = getattr(model.config, "max_position_embeddings", None)
    if not n:
        raise ValueError(
            "the model config has no max_position_embeddings; set method.icl.max_context_tokens"
        )
    return int(n)
