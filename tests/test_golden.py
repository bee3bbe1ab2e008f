"""Golden losses: each method's trainer=smoke losses on the tiny world, each through the
method's own pipeline (one harness job per method, tests/make_golden.py).

A change that moves them (init, scaling, masking, sampler, optimiser, a pipeline) fails here;
if the change is intended, regenerate with ``make golden``, review the diff and say why in the
commit.
"""

from __future__ import annotations

import itertools
import json

import pytest

from tests.make_golden import GOLDEN, job_losses, methods_with_adapters, smoke_losses

GOLDEN_LOSSES = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}


def test_every_method_has_golden_losses():
    missing = sorted(set(methods_with_adapters()) - set(GOLDEN_LOSSES))
    assert not missing, f"no golden losses for {missing}; run `make golden` and review the diff"


def test_no_two_methods_share_golden_losses():
    """A method whose job bypassed its own pipeline would repeat another method's losses."""
    same = [
        (a, b)
        for a, b in itertools.combinations(sorted(GOLDEN_LOSSES), 2)
        if sorted(GOLDEN_LOSSES[a].values()) == sorted(GOLDEN_LOSSES[b].values())
    ]
    assert not same, f"identical golden losses for {same}; each method must use its own pipeline"


def test_job_losses_reads_both_kinds_of_results():
    results = {
        "train": {"losses": [[1, 2.0000004], [2, 1.5]]},
        "single": {"losses": {"a": [[1, 3.0]], "b": [[1, 4.0], [2, 3.5]]}},
    }
    assert job_losses(results) == {
        "train": [2.0, 1.5],
        "single/a": [3.0],
        "single/b": [4.0, 3.5],
    }
    assert job_losses({"train": {"losses": []}, "single": None}) == {}


@pytest.mark.parametrize("method", sorted(GOLDEN_LOSSES))
def test_smoke_losses_match_golden(method, tiny_world, tmp_path):
    losses = smoke_losses(method, tiny_world, tmp_path)
    golden = GOLDEN_LOSSES[method]
    assert sorted(losses) == sorted(golden), f"{method}: the job trained other adapters"
    for key in golden:
        assert losses[key] == pytest.approx(golden[key], rel=1e-4), f"{method}: {key}"
