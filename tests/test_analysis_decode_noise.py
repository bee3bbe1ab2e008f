"""analysis.decode_noise: a finished run answered again with other decoding seeds. A greedy run
has no decoding noise and reproduces its recorded scores; sampled draws differ and the first
one is the run's own seed; the std over seeds is split into its decoding and training parts."""

from __future__ import annotations

import math

import pytest

from analysis import decode_noise
from analysis.decode_noise import RunNoise, draw_seeds, group_noise, measure, to_markdown
from moelora.inference.load import load_run
from moelora.inference.predict import predict
from moelora.utils.io import read_json, write_jsonl


def test_draw_seeds_start_at_the_run_seed_and_avoid_training_seeds():
    assert draw_seeds(43, 4) == [43, 43001, 43002, 43003]
    with pytest.raises(ValueError, match="at least 2 draws"):
        draw_seeds(42, 1)


def test_greedy_run_reproduces_its_scores_and_has_no_decoding_noise(smoke_runs):
    run_dir = smoke_runs["lora_full"]
    noise = measure(run_dir, draws=2)
    assert noise.decoding == "greedy" and noise.draw_seeds == [42, 42001]
    assert noise.reproduced
    assert noise.draws[0] == pytest.approx(read_json(run_dir / "results.json")["scores"])
    assert noise.draws[1] == noise.draws[0]
    assert noise.spread("avg")[1] == 0.0


def test_sampled_draws_differ_and_the_first_uses_the_run_seed(smoke_runs):
    run_dir = smoke_runs["moelora_dense"]
    noise = measure(run_dir, draws=3, mode="sample", temperature=1.5, top_p=1.0)
    assert noise.decoding == "sample" and noise.draw_seeds == [42, 42001, 42002]
    run = load_run(run_dir)
    again = predict(run, run.splits()["test"], seed=42, mode="sample", temperature=1.5, top_p=1.0)
    assert noise.draws[0] == pytest.approx(again.scores)
    assert any(noise.spread(t)[1] > 0 for t in noise.tasks)


def _run(group, seed, avg, draws):
    return RunNoise(
        run_dir=f"{group}/seed={seed}",
        method="m",
        seed=seed,
        decoding="sample",
        tasks=["A"],
        recorded={"A": avg, "avg": avg},
        draw_seeds=[seed, 1, 2],
        draws=[{"A": d, "avg": d} for d in draws],
    )


def test_group_noise_splits_the_seed_std_into_decoding_and_training():
    runs = [
        _run("out/m", 42, 0.70, [0.70, 0.72, 0.68]),  # decode std 0.02
        _run("out/m", 43, 0.66, [0.66, 0.66, 0.66]),  # decode std 0
        _run("out/m", 44, 0.62, [0.62, 0.63, 0.61]),  # decode std 0.01
        _run("out/other", 42, 0.5, [0.5, 0.5]),
    ]
    g, other = group_noise(runs)
    assert g.group == "out/m" and g.seeds == [42, 43, 44]
    assert g.total_std == pytest.approx(0.04)
    assert g.decode_std == pytest.approx(math.sqrt((0.02**2 + 0 + 0.01**2) / 3))
    assert g.train_std == pytest.approx(math.sqrt(0.04**2 - g.decode_std**2))
    assert math.isnan(other.total_std) and math.isnan(other.train_std)  # one seed: no spread
    assert [r.reproduced for r in runs] == [True, True, True, True]


def test_markdown_flags_a_run_that_did_not_reproduce():
    good, bad = _run("out/m", 42, 0.7, [0.7, 0.8]), _run("out/m", 43, 0.6, [0.65, 0.6])
    text = to_markdown([good, bad])
    assert not bad.reproduced
    assert "| out/m | 42 | sample | 2 | yes | 0.7500 ± 0.0707 | 0.7500 ± 0.0707 |" in text
    assert "| out/m | 43 | sample | 2 | NO |" in text and "did not give its recorded" in text
    assert "| out/m | 42, 43 | 0.0707 |" in text


def test_cli_writes_markdown_and_json(smoke_runs, tmp_path, capsys):
    root = smoke_runs["lora_full"].parents[2]  # <root>/outputs/default/<method>/seed=42
    assert (
        decode_noise.main(
            ["--root", str(root), "--methods", "lora_full", "--draws", "2", "--out", str(tmp_path)]
        )
        == 0
    )
    saved = read_json(tmp_path / "decode_noise.json")
    assert [r["method"] for r in saved] == ["lora_full"] and len(saved[0]["draws"]) == 2
    assert "| yes |" in (tmp_path / "decode_noise.md").read_text()
    with pytest.raises(SystemExit):
        decode_noise.main(["--out", str(tmp_path)])
    with pytest.raises(ValueError, match="at least 2 draws"):
        decode_noise.main([str(smoke_runs["lora_full"]), "--draws", "1", "--out", str(tmp_path)])


def test_another_input_is_answered_and_its_first_draw_counts(smoke_runs, tmp_path):
    """``--input``: the run answers that file; nothing recorded to reproduce, so the spread over
    seeds is taken from each run's draw at its own seed."""
    run_dir = smoke_runs["lora_full"]
    run = load_run(run_dir)
    part = run.splits()["test"][::2]
    write_jsonl(tmp_path / "part.jsonl", part)
    noise = measure(run_dir, draws=2, input_file=tmp_path / "part.jsonl")
    assert noise.reproduced is None and noise.input == str(tmp_path / "part.jsonl")
    assert noise.draws[0] == pytest.approx(predict(run, part, seed=42).scores)
    assert noise.own("avg") == noise.draws[0]["avg"]
    text = to_markdown([noise])
    assert "| other input |" in text and "part.jsonl" in text and "did not give" not in text
