"""Golden losses: each method's first four trainer=smoke losses on the tiny world.

A change that moves them (init, scaling, masking, sampler, optimiser) fails here; if the
change is intended, regenerate with ``make golden``, review the diff and say why in the commit.
"""

from __future__ import annotations

import json

import pytest

from tests.make_golden import GOLDEN, methods_with_adapters, smoke_losses

GOLDEN_LOSSES = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}


def test_every_method_has_golden_losses():
    missing = sorted(set(methods_with_adapters()) - set(GOLDEN_LOSSES))
    assert not missing, f"no golden losses for {missing}; run `make golden` and review the diff"


@pytest.mark.parametrize("method", sorted(GOLDEN_LOSSES))
def test_smoke_losses_match_golden(method, tiny_world, tmp_path):
    losses = smoke_losses(method, tiny_world, tmp_path)
    assert losses == pytest.approx(GOLDEN_LOSSES[method], rel=1e-4)
