"""Per-rank RNG state on resume (moelora/engine/checkpoint.py): each process of a
multi-process job resumes its own random streams (dropout masks), not rank 0's."""

from __future__ import annotations

import torch

from moelora.engine.checkpoint import load_checkpoint, save_checkpoint
from moelora.utils.seed import process_rng_state


def _parts():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return model, opt, sched


def _state_after(seed: int):
    torch.manual_seed(seed)
    torch.rand(3)
    return process_rng_state()


def test_each_rank_resumes_its_own_stream(tmp_path):
    model, opt, sched = _parts()
    ranks = [_state_after(1), _state_after(2)]  # what rank 0 and rank 1 drew from
    torch.manual_seed(1)
    torch.rand(3)  # rank 0's process saves
    expected = {r: None for r in range(2)}
    for r in range(2):
        torch.set_rng_state(ranks[r][0]["torch_cpu"])
        expected[r] = torch.rand(5)
    path = save_checkpoint(
        tmp_path, step=2, model=model, optimizer=opt, scheduler=sched,
        adapter_meta={"tasks": None}, rank_rng=ranks,
    )  # fmt: skip
    for r in range(2):
        torch.manual_seed(99)
        load_checkpoint(path, model=model, optimizer=opt, scheduler=sched, rank=r, world_size=2)
        assert torch.equal(torch.rand(5), expected[r]), r
    assert not torch.equal(expected[0], expected[1])


def test_a_single_process_checkpoint_restores_rank_0s(tmp_path):
    model, opt, sched = _parts()
    torch.manual_seed(5)
    path = save_checkpoint(
        tmp_path, step=1, model=model, optimizer=opt, scheduler=sched, adapter_meta={}
    )
    expected = torch.rand(4)
    torch.manual_seed(99)
    load_checkpoint(path, model=model, optimizer=opt, scheduler=sched, rank=1, world_size=2)
    assert torch.equal(torch.rand(4), expected)  # no per-rank state: the saved one
