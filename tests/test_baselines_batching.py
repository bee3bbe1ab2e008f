"""BT and RBT task-batch samplers (docs/methods.md §7, Table 3 "w BT" / "w RBT")."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hydra.utils import instantiate

from baselines.batching import BTSampler, RBTSampler
from moelora.engine.train import _micro_batches
from tests.conftest import REPO_ROOT, compose

SIZES = {0: 10, 1: 7, 2: 3}


def _task_ids(sizes: dict[int, int]) -> list[int]:
    ids = [t for t, n in sizes.items() for _ in range(n)]
    # interleave so that examples of one task are not contiguous indices
    return [ids[i] for i in sorted(range(len(ids)), key=lambda i: (i * 7919) % len(ids))]


def _take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_bt_batches_are_single_task_and_each_example_once_per_epoch():
    ids = _task_ids(SIZES)
    sampler = BTSampler(ids, batch_size=4, seed=0)
    per_epoch = 3 + 2 + 1  # ceil(10/4) + ceil(7/4) + ceil(3/4)
    batches = _take(sampler, 3 * per_epoch)
    for b in batches:
        assert len({ids[i] for i in b}) == 1
    for e in range(3):
        epoch = batches[e * per_epoch : (e + 1) * per_epoch]
        flat = [i for b in epoch for i in b]
        assert sorted(flat) == list(range(len(ids)))
        sizes = Counter((ids[b[0]], len(b)) for b in epoch)
        assert sizes == Counter({(0, 4): 2, (0, 2): 1, (1, 4): 1, (1, 3): 1, (2, 3): 1})
    assert batches[:per_epoch] != batches[per_epoch : 2 * per_epoch]  # reshuffled each epoch


def test_bt_drop_last_keeps_only_full_batches():
    ids = _task_ids(SIZES)
    batches = _take(BTSampler(ids, batch_size=4, seed=1, drop_last=True), 3 * 3)
    assert all(len(b) == 4 and len({ids[i] for i in b}) == 1 for b in batches)
    for e in range(3):
        flat = [i for b in batches[e * 3 : (e + 1) * 3] for i in b]
        assert len(flat) == len(set(flat)) == 12  # 2 chunks of task 0, 1 of task 1
    with pytest.raises(ValueError, match="drop_last"):
        BTSampler([0, 1, 1], batch_size=4, seed=0, drop_last=True)


def test_bt_chunk_order_is_shuffled_and_seeded():
    ids = _task_ids({0: 40, 1: 40})
    first_tasks = {ids[_take(BTSampler(ids, batch_size=4, seed=s), 1)[0][0]] for s in range(20)}
    assert first_tasks == {0, 1}
    assert _take(BTSampler(ids, batch_size=4, seed=3), 30) == _take(
        BTSampler(ids, batch_size=4, seed=3), 30
    )
    assert _take(BTSampler(ids, batch_size=4, seed=3), 30) != _take(
        BTSampler(ids, batch_size=4, seed=4), 30
    )


def test_one_task_per_optimiser_step_on_any_device_split():
    ids = _task_ids({0: 33, 1: 20, 2: 50})
    for batch in _take(BTSampler(ids, batch_size=8, seed=0), 40):
        for world, accum in [(1, 2), (2, 2), (4, 1)]:
            for rank in range(world):
                for micro in _micro_batches(batch, rank, world, accum):
                    assert {ids[i] for i in micro} == {ids[batch[0]]}


CHI2_CRIT_DF3_P001 = 16.27  # chi-square critical value, 3 degrees of freedom, p = 0.001


def _chi2(counts: Counter, probs: dict[int, float], n: int) -> float:
    return sum((counts[t] - n * p) ** 2 / (n * p) for t, p in probs.items())


@pytest.mark.parametrize("mode", ["uniform", "proportional"])
def test_rbt_task_frequencies_follow_the_rule(mode):
    sizes = {0: 100, 1: 10, 2: 1000, 3: 50}
    ids = _task_ids(sizes)
    n = 4000
    batches = _take(RBTSampler(ids, batch_size=8, seed=5, task_probs=mode), n)
    assert all(len(b) == 8 and len({ids[i] for i in b}) == 1 for b in batches)
    counts = Counter(ids[b[0]] for b in batches)
    if mode == "uniform":
        probs = {t: 0.25 for t in sizes}
    else:
        probs = {t: s / 1160 for t, s in sizes.items()}
    assert _chi2(counts, probs, n) < CHI2_CRIT_DF3_P001, counts
    # and far from the other rule
    other = (
        {t: s / 1160 for t, s in sizes.items()} if mode == "uniform" else {t: 0.25 for t in sizes}
    )
    assert _chi2(counts, other, n) > 100 * CHI2_CRIT_DF3_P001


def test_rbt_walks_each_task_stream_without_repeats_until_exhausted():
    ids = _task_ids({0: 10, 1: 7})
    batches = _take(RBTSampler(ids, batch_size=4, seed=2), 200)
    for task, size in [(0, 10), (1, 7)]:
        stream = [i for b in batches if ids[b[0]] == task for i in b]
        for k in range(len(stream) // size):
            assert sorted(stream[k * size : (k + 1) * size]) == [
                i for i, t in enumerate(ids) if t == task
            ]


def test_invalid_options_are_refused():
    with pytest.raises(ValueError, match="task_probs"):
        RBTSampler([0, 1], batch_size=2, seed=0, task_probs="sqrt")
    with pytest.raises(ValueError, match="micro"):
        BTSampler([0, 1], batch_size=2, seed=0, granularity="micro")


@pytest.mark.parametrize(
    "name,cls,extra",
    [
        ("moelora_bt", BTSampler, ["method.bt.drop_last=true"]),
        ("moelora_rbt", RBTSampler, ["method.rbt.task_probs=proportional"]),
    ],
)
def test_method_yamls_instantiate_their_sampler(name, cls, extra):
    if not (REPO_ROOT / "conf" / "method" / "moelora_dense.yaml").is_file():
        pytest.skip("conf/method/moelora_dense.yaml (the parent config) is not there yet")
    cfg = compose([f"method={name}", "model=hf", "model.path=/unused", "logger=none", *extra])
    assert cfg.method.name == name
    dense = compose(["method=moelora_dense", "model=hf", "model.path=/unused", "logger=none"])
    assert cfg.method.adapter == dense.method.adapter  # everything else is MOELoRA (D)
    sampler = instantiate(cfg.method.sampler, task_ids=[0, 0, 0, 0, 1, 1], batch_size=4, seed=0)
    assert isinstance(sampler, cls)
    if cls is BTSampler:
        assert sampler.drop_last is True
    else:
        assert sampler.task_probs == "proportional"
