"""Demonstration packing for in-context learning (docs/methods.md §2.1).

For a query of task t, candidates come from task t's training split in a seeded random
order. Greedy packing walks that order and keeps every candidate whose addition still
leaves room for the query and the generation budget; it stops after ``max_demos`` kept or
``max_candidates`` examined. When fewer than ``min_demos`` fit, the ``min_demos`` shortest
of the examined candidates are taken and their inputs cut (head kept) until they fit.

Prompt layout: demonstrations separated by a blank line, the query last; each part is
``input`` + (``"\\n答："`` unless the input already ends with ``"答："``) + (for
demonstrations) ``target``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

ANSWER_CUE = "答："
DEMO_SEPARATOR = "\n\n"


def with_answer_cue(text: str) -> str:
    """``text`` ending in the answer cue "答：" (added on a new line when missing)."""
    return text if text.endswith(ANSWER_CUE) else f"{text}\n{ANSWER_CUE}"


def demo_text(record: dict[str, Any], input_text: str | None = None) -> str:
    """One demonstration: its (possibly shortened) input, the answer cue and its target."""
    return with_answer_cue(record["input"] if input_text is None else input_text) + record["target"]


def join_prompt(demos: Sequence[str], query: str) -> str:
    return DEMO_SEPARATOR.join([*demos, query])


class TokenCounter(Protocol):
    """Counts tokens of a text and cuts a text to a token budget (keeping its head)."""

    def count(self, text: str) -> int: ...

    def head(self, text: str, n_tokens: int) -> str: ...


def _is_wide(ch: str) -> bool:
    # CJK ideographs, kana, hangul, CJK punctuation and full-width forms all lie above U+2E80.
    return ord(ch) >= 0x2E80


class ProxyCounter:
    """The conservative proxy of §2.1 for a remote model without its tokenizer: one token per
    CJK (wide) character, one per 3 other characters (rounded up). The 5 % margin is applied
    to the budget by :func:`effective_budget`, not here."""

    def count(self, text: str) -> int:
        wide = sum(1 for ch in text if _is_wide(ch))
        return wide + math.ceil((len(text) - wide) / 3)

    def head(self, text: str, n_tokens: int) -> str:
        if n_tokens <= 0:
            return ""
        wide = other = 0
        for i, ch in enumerate(text):
            if _is_wide(ch):
                wide += 1
            else:
                other += 1
            if wide + math.ceil(other / 3) > n_tokens:
                return text[:i]
        return text


class TokenizerCounter:
    """Exact counts with the serving model's own tokenizer."""

    def __init__(self, tokenizer: Any, *, add_special_tokens: bool = False) -> None:
        self.tokenizer = tokenizer
        self.add_special_tokens = add_special_tokens

    def _ids(self, text: str) -> list[int]:
        # counting only: a text longer than the model's context is expected here, so the
        # tokenizer's "sequence length is longer than the maximum" warning is turned off
        return self.tokenizer(text, add_special_tokens=self.add_special_tokens, verbose=False)[
            "input_ids"
        ]

    def count(self, text: str) -> int:
        return len(self._ids(text))

    def head(self, text: str, n_tokens: int) -> str:
        if n_tokens <= 0:
            return ""
        ids = self._ids(text)
        if len(ids) <= n_tokens:
            return text
        n = n_tokens
        while n > 0:  # decoding and re-encoding can merge differently: shrink until it fits
            cut = self.tokenizer.decode(ids[:n], skip_special_tokens=True)
            if text.startswith(cut) and self.count(cut) <= n_tokens:
                return cut
            n -= 1
        return ""


def effective_budget(max_context_tokens: int, margin: float) -> int:
    """The context budget after a safety margin (§2.1: 5 % with the proxy counter)."""
    if not 0 <= margin < 1:
        raise ValueError(f"icl margin={margin}; use a fraction in [0, 1)")
    return int(math.floor(max_context_tokens * (1 - margin)))


@dataclass
class Packing:
    """The demonstrations chosen for one query (or one task in ``fixed_per_task`` mode).

    Attributes:
        demos: the chosen training records, with ``input`` shortened in the fallback.
        examined: how many candidates of the shuffled pool were looked at.
        fallback: the fewer-than-``min_demos`` fallback (shortest, truncated) was used.
    """

    demos: list[dict[str, Any]] = field(default_factory=list)
    examined: int = 0
    fallback: bool = False

    @property
    def texts(self) -> list[str]:
        return [demo_text(d) for d in self.demos]

    @property
    def sample_ids(self) -> list[Any]:
        return [d.get("sample_id") for d in self.demos]


@dataclass
class PackingRules:
    """Budget and bounds of §2.1.

    Attributes:
        budget: tokens available for the prompt text itself, i.e. the (margin-reduced)
            context minus the generation budget and the template overhead.
        per_demo_overhead: extra tokens each demonstration costs in the serving format
            (e.g. chat-message framing with ``message_layout: multi_turn``).
    """

    budget: int
    min_demos: int = 3
    max_demos: int = 10
    max_candidates: int = 50
    per_demo_overhead: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.min_demos <= self.max_demos:
            raise ValueError(
                f"icl demo bounds {self.min_demos}..{self.max_demos}: need 0 <= min <= max"
            )
        if self.max_candidates < 1:
            raise ValueError("icl.max_candidates must be at least 1")
        if self.budget < 1:
            raise ValueError(
                f"the ICL prompt budget is {self.budget} tokens: the context is too small for the "
                "generation budget; raise icl.max_context_tokens or lower icl.max_new_tokens"
            )


def prompt_cost(
    demos: Sequence[str], query: str, counter: TokenCounter, rules: PackingRules
) -> int:
    return counter.count(join_prompt(demos, query)) + rules.per_demo_overhead * len(demos)


def fit_query(query_input: str, counter: TokenCounter, rules: PackingRules) -> tuple[str, bool]:
    """The query text with its answer cue; cut (head kept, §1.2) only if it alone overflows."""
    query = with_answer_cue(query_input)
    if counter.count(query) <= rules.budget:
        return query, False
    return counter.head(query, rules.budget), True


def pack(
    pool: Sequence[dict[str, Any]],
    query: str,
    *,
    counter: TokenCounter,
    rules: PackingRules,
    rng: random.Random,
) -> Packing:
    """Choose demonstrations for ``query`` (the full query text, answer cue included).

    Args:
        pool: the candidate demonstrations (the query task's training records).
        query: the query text as it will appear last in the prompt.
        counter: token counting of the serving model (or the proxy).
        rules: budget and bounds.
        rng: the seeded RNG that orders the pool (seeded by run seed and task, or per example).

    Returns:
        The packing; ``len(demos)`` is in ``[min_demos, max_demos]`` whenever the pool and the
        budget allow it.
    """
    order = rng.sample(range(len(pool)), k=min(len(pool), rules.max_candidates))
    chosen: list[int] = []
    for i in order:
        trial = [demo_text(pool[j]) for j in chosen] + [demo_text(pool[i])]
        if prompt_cost(trial, query, counter, rules) <= rules.budget:
            chosen.append(i)
            if len(chosen) == rules.max_demos:
                break
    examined = order.index(chosen[-1]) + 1 if len(chosen) == rules.max_demos else len(order)
    need = min(rules.min_demos, len(order))
    if len(chosen) >= need:
        return Packing([pool[i] for i in chosen], examined=examined)
    shortest = sorted(order, key=lambda i: (counter.count(demo_text(pool[i])), order.index(i)))
    return Packing(
        _truncate_to_fit([pool[i] for i in shortest[:need]], query, counter, rules),
        examined=len(order),
        fallback=True,
    )


def _truncate_to_fit(
    demos: list[dict[str, Any]], query: str, counter: TokenCounter, rules: PackingRules
) -> list[dict[str, Any]]:
    """Cut every demonstration's input to a common head length (in tokens) — the largest
    that fits, found by bisection. If even empty inputs overflow, drop the longest demos."""

    def cut(keep: int) -> list[dict[str, Any]]:
        return [{**d, "input": counter.head(d["input"], keep)} for d in demos]

    def fits(ds: list[dict[str, Any]]) -> bool:
        return prompt_cost([demo_text(d) for d in ds], query, counter, rules) <= rules.budget

    while demos and not fits(cut(0)):
        demos = sorted(demos, key=lambda d: counter.count(demo_text(d, "")))[:-1]
    if not demos:
        return []
    lo, hi = 0, max(counter.count(d["input"]) for d in demos)
    while lo < hi:  # largest keep with fits(cut(keep))
        mid = (lo + hi + 1) // 2
        if fits(cut(mid)):
            lo = mid
        else:
            hi = mid - 1
    return cut(lo)


def reference_query(queries: Sequence[str], counter: TokenCounter, rules: PackingRules) -> str:
    """The query a task's shared set is packed against (``fixed_per_task``): the task's
    longest query, cut to half the budget so that one very long query does not starve the
    whole task of demonstrations."""
    longest = max(queries, key=counter.count)
    return counter.head(longest, rules.budget // 2)


def fit_shared(
    demos: Sequence[dict[str, Any]], query: str, counter: TokenCounter, rules: PackingRules
) -> tuple[list[dict[str, Any]], bool]:
    """A task's shared demonstrations for one of its queries (``fixed_per_task``).

    Trailing demonstrations are dropped until the prompt fits; if fewer than ``min_demos``
    would remain, the ``min_demos`` shortest shared demonstrations are cut to fit instead
    (the §2.1 fallback). Returns ``(demos, fallback_used)``.
    """
    kept = list(demos)
    while kept and prompt_cost([demo_text(d) for d in kept], query, counter, rules) > rules.budget:
        kept.pop()
    need = min(rules.min_demos, len(demos))
    if len(kept) >= need:
        return kept, False
    shortest = sorted(demos, key=lambda d: counter.count(demo_text(d)))[:need]
    return _truncate_to_fit(shortest, query, counter, rules), True
