"""In-context learning (docs/methods.md §2): demonstration packing, the HTTP backend against a real
loopback server (retries, cache, resume), secrecy of the API key, and end-to-end runs."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from baselines.icl.backends import EndpointError, IclRequest, OpenAICompatibleBackend
from baselines.icl.packing import (
    PackingRules,
    ProxyCounter,
    demo_text,
    effective_budget,
    fit_query,
    fit_shared,
    join_prompt,
    pack,
    reference_query,
)
from baselines.icl.pipeline import build_requests
from moelora.engine.generation import DecodingSettings
from moelora.utils.io import read_json
from tests.conftest import REPO_ROOT, compose, tiny_overrides


class CharCounter:
    """Reference counter for the tests: one token per character."""

    def count(self, text: str) -> int:
        return len(text)

    def head(self, text: str, n_tokens: int) -> str:
        return text[: max(0, n_tokens)]


def _rec(task: str, i: int, n_in: int, n_out: int = 2) -> dict:
    return {
        "input": "x" * n_in,
        "target": "y" * n_out,
        "task_dataset": task,
        "sample_id": f"{task}-{i}",
    }


# ---- prompt layout and counting ------------------------------------------------------------
def test_demo_layout_answer_cue_and_blank_lines():
    a = {"input": "问题一", "target": "甲"}
    b = {"input": "问题二\n答：", "target": "乙"}
    assert demo_text(a) == "问题一\n答：甲"
    assert demo_text(b) == "问题二\n答：乙"  # cue already there: not repeated
    assert (
        join_prompt([demo_text(a), demo_text(b)], "查询\n答：")
        == "问题一\n答：甲\n\n问题二\n答：乙\n\n查询\n答："
    )


def test_proxy_counter_counts_cjk_as_one_and_others_by_three():
    c = ProxyCounter()
    assert c.count("答：abc") == 3  # 2 wide + ceil(3/3)
    assert c.count("abcd") == 2  # ceil(4/3)
    assert c.count("医学abcdefg") == 5  # 2 + ceil(7/3)
    assert c.head("医学abcdefg", 4) == "医学abcdef"  # 2 + ceil(6/3) = 4; one more char makes 5
    assert c.head("医学", 1) == "医"
    assert effective_budget(4096, 0.05) == 3891  # floor(4096 * 0.95)


# ---- packing -------------------------------------------------------------------------------
def _reference_greedy(pool, query, budget, seed, max_demos=10, max_candidates=50):
    """Independent restatement of §2.1 step 3 with character counts."""
    rng = random.Random(seed)
    order = rng.sample(range(len(pool)), k=min(len(pool), max_candidates))
    taken = []
    for i in order:
        texts = ["x" * len(pool[j]["input"]) + "\n答：" + pool[j]["target"] for j in taken + [i]]
        if len("\n\n".join(texts + [query])) <= budget:
            taken.append(i)
            if len(taken) == max_demos:
                break
    return [pool[i]["sample_id"] for i in taken]


@pytest.mark.parametrize("budget", [150, 260, 400, 5000])
def test_packing_fills_budget_greedily_within_bounds(budget):
    r = random.Random(7)
    pool = [_rec("T", i, r.randint(5, 90)) for i in range(80)]
    query = "q" * 20 + "\n答："
    rules = PackingRules(budget=budget)
    p = pack(pool, query, counter=CharCounter(), rules=rules, rng=random.Random(3))
    prompt = join_prompt(p.texts, query)
    assert len(prompt) <= budget
    assert p.sample_ids == _reference_greedy(pool, query, budget, seed=3)
    if not p.fallback:
        assert 3 <= len(p.demos) <= 10
    if budget == 5000:
        assert len(p.demos) == 10 and p.examined == 10  # everything fits: stop at 10
    assert {d["sample_id"] for d in p.demos} <= {d["sample_id"] for d in pool}


def test_packing_fallback_takes_three_shortest_and_cuts_their_inputs():
    pool = [_rec("T", i, 200 + 10 * i, n_out=3) for i in range(12)]
    query = "q" * 30 + "\n答："
    budget = 180  # not even one full demonstration fits
    rules = PackingRules(budget=budget)
    p = pack(pool, query, counter=CharCounter(), rules=rules, rng=random.Random(0))
    assert p.fallback and len(p.demos) == 3
    assert sorted(p.sample_ids) == ["T-0", "T-1", "T-2"]  # the three shortest
    by_id = {d["sample_id"]: d for d in pool}
    for d in p.demos:
        orig = by_id[d["sample_id"]]
        assert orig["input"].startswith(d["input"]) and len(d["input"]) < len(orig["input"])
        assert d["target"] == orig["target"]
    # the common input length is the largest that fits: hand computation.
    # prompt = 3 × (k + 3 + 3) + 2 separators × 2 + ... + query (33): 3k + 18 + 6 + 33 <= 180
    k = (180 - 18 - 6 - 33) // 3
    assert [len(d["input"]) for d in p.demos] == [k, k, k]
    assert len(join_prompt(p.texts, query)) <= budget


def test_query_alone_over_budget_is_cut_at_the_head_and_gets_no_demos():
    rules = PackingRules(budget=50)
    query, cut = fit_query("h" * 10 + "t" * 100, CharCounter(), rules)
    assert cut and query == "h" * 10 + "t" * 40
    p = pack(
        [_rec("T", i, 5) for i in range(5)],
        query,
        counter=CharCounter(),
        rules=rules,
        rng=random.Random(0),
    )
    assert p.demos == []


def test_small_pool_takes_what_it_has():
    pool = [_rec("T", i, 5) for i in range(2)]
    p = pack(
        pool,
        "q\n答：",
        counter=CharCounter(),
        rules=PackingRules(budget=1000),
        rng=random.Random(0),
    )
    assert len(p.demos) == 2 and not p.fallback


def test_demo_modes_draw_from_the_same_task_only():
    train = [_rec(t, i, 10 + i) for t in ("A", "B") for i in range(30)]
    test = [_rec(t, 100 + i, 15) for t in ("A", "B") for i in range(4)]
    rules = PackingRules(budget=200)
    fixed, rows = build_requests(
        test, train, counter=CharCounter(), rules=rules, demo_mode="fixed_per_task", seed=1
    )
    for row in rows:
        assert all(d.startswith(row["task_dataset"] + "-") for d in row["demo_ids"])
        assert 3 <= row["n_demos"] <= 10 and row["prompt_tokens"] <= 200
    a_sets = {tuple(r["demo_ids"]) for r in rows if r["task_dataset"] == "A"}
    assert len(a_sets) == 1  # one set per task
    _, rows2 = build_requests(
        test, train, counter=CharCounter(), rules=rules, demo_mode="per_example", seed=1
    )
    assert len({tuple(r["demo_ids"]) for r in rows2 if r["task_dataset"] == "A"}) > 1
    assert fixed[0].prompt.endswith(test[0]["input"] + "\n答：")
    with pytest.raises(ValueError, match="demo_mode"):
        build_requests(test, train, counter=CharCounter(), rules=rules, demo_mode="x", seed=1)


def test_shared_set_shrinks_for_long_queries_but_keeps_three():
    shared = [_rec("T", i, 20 + i) for i in range(6)]  # demo i costs 20 + i + 5 chars
    rules = PackingRules(budget=300)
    kept, cut = fit_shared(shared, "q" * 100, CharCounter(), rules)
    # all six: sum(25..30) = 165 + 6 separators × 2 + 100 = 277 <= 300
    assert kept == shared and not cut
    kept, cut = fit_shared(shared, "q" * 150, CharCounter(), rules)
    # five: 140 + 10 + 150 = 300 fits; six would be 327
    assert kept == shared[:5] and not cut
    kept, cut = fit_shared(shared, "q" * 230, CharCounter(), rules)
    # three full demos need 25+26+27 + 6 + 230 = 314 > 300: the three shortest, cut to fit
    assert cut and [d["sample_id"] for d in kept] == ["T-0", "T-1", "T-2"]
    assert len(join_prompt([demo_text(d) for d in kept], "q" * 230)) <= 300
    assert reference_query(["a" * 10, "b" * 900], CharCounter(), rules) == "b" * 150


# ---- the HTTP backend against a loopback server ---------------------------------------------
def _answer_for(messages: list[dict]) -> str:
    return "ans-" + hashlib.sha256(messages[-1]["content"].encode()).hexdigest()[:10]


class FakeEndpoint:
    """An OpenAI-style chat-completions server on 127.0.0.1 (a free port), in a thread.

    ``fail_first`` lists status codes returned to the first requests; after ``ok_budget``
    successful answers every request gets ``then_status`` (simulates an endpoint that goes
    away half-way)."""

    def __init__(self, fail_first=(), ok_budget=None, then_status=400):
        self.fail_first = list(fail_first)
        self.ok_budget = ok_budget
        self.then_status = then_status
        self.requests: list[dict] = []
        self.auth: list[str | None] = []
        self.ok = 0
        self.lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with endpoint.lock:
                    endpoint.requests.append(body)
                    endpoint.auth.append(self.headers.get("Authorization"))
                    if self.path != "/v1/chat/completions":
                        status = 404
                    elif endpoint.fail_first:
                        status = endpoint.fail_first.pop(0)
                    elif endpoint.ok_budget is not None and endpoint.ok >= endpoint.ok_budget:
                        status = endpoint.then_status
                    else:
                        status = 200
                        endpoint.ok += 1
                if status != 200:
                    self.send_response(status)
                    if status == 429:
                        self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(b'{"error": "nope"}')
                    return
                out = json.dumps(
                    {
                        "choices": [
                            {
                                "message": {
                                    "role": "assistant",
                                    "content": _answer_for(body["messages"]),
                                }
                            }
                        ]
                    }
                )
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(out.encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def _requests(n: int) -> list[IclRequest]:
    return [
        IclRequest(
            record={"sample_id": f"s{i}", "task_dataset": "T"},
            prompt=f"demo {i}\n答：d\n\nquery {i}\n答：",
            query=f"query {i}\n答：",
            demos=[(f"demo {i}\n答：", "d")],
        )
        for i in range(n)
    ]


def _backend(url: str, cache: Path, **kw) -> OpenAICompatibleBackend:
    opts = dict(
        model="m",
        api_key_env="ICL_TEST_KEY",
        max_concurrency=3,
        max_retries=4,
        retry_base_delay=0.01,
        retry_max_delay=0.05,
        timeout=5.0,
    )
    opts.update(kw)
    return OpenAICompatibleBackend(base_url=url, cache_path=cache, **opts)


SAMPLE = DecodingSettings(mode="sample", max_new_tokens=16)


def test_http_backend_retries_on_500_and_429_and_maps_answers(tmp_path, monkeypatch):
    monkeypatch.setenv("ICL_TEST_KEY", "sk-test-123")
    reqs = _requests(6)
    with FakeEndpoint(fail_first=[500, 503, 429]) as srv:
        backend = _backend(srv.url, tmp_path / "cache.jsonl")
        texts = backend.generate_many(reqs, decoding=SAMPLE, seed=42)
    assert texts == [_answer_for(r.messages("single")) for r in reqs]
    assert len(srv.requests) == 6 + 3 and srv.ok == 6
    assert backend.stats["retries"] == 3 and backend.stats["requests_sent"] == 9
    assert set(srv.auth) == {"Bearer sk-test-123"}
    body = srv.requests[-1]
    assert (
        body["model"],
        body["temperature"],
        body["top_p"],
        body["max_tokens"],
        body["seed"],
    ) == ("m", 0.95, 0.7, 16, 42)


def test_http_backend_gives_up_on_client_errors_without_retrying(tmp_path):
    with FakeEndpoint(fail_first=[400]) as srv:
        backend = _backend(srv.url, tmp_path / "c.jsonl", max_concurrency=1)
        with pytest.raises(EndpointError, match="HTTP 400"):
            backend.generate_many(_requests(1), decoding=SAMPLE, seed=0)
    assert len(srv.requests) == 1


def test_http_backend_caches_and_a_rerun_sends_nothing(tmp_path):
    cache = tmp_path / "cache.jsonl"
    reqs = _requests(5)
    with FakeEndpoint() as srv:
        first = _backend(srv.url, cache).generate_many(reqs, decoding=SAMPLE, seed=1)
        n_first = len(srv.requests)
        again = _backend(srv.url, cache)
        second = again.generate_many(reqs, decoding=SAMPLE, seed=1)
        assert len(srv.requests) == n_first == 5  # nothing re-sent
        assert second == first and again.stats["cache_hits"] == 5
        # another seed or decoding is another key
        _backend(srv.url, cache).generate_many(reqs[:2], decoding=SAMPLE, seed=2)
        greedy = DecodingSettings(mode="greedy", max_new_tokens=16)
        _backend(srv.url, cache).generate_many(reqs[:1], decoding=greedy, seed=1)
        assert len(srv.requests) == 5 + 2 + 1
        assert srv.requests[-1]["temperature"] == 0.0
    lines = [json.loads(x) for x in cache.read_text().splitlines()]
    assert len(lines) == 8 and {
        "key",
        "backend",
        "model",
        "prompt_sha256",
        "decoding",
        "seed",
        "text",
    } <= set(lines[0])


def test_http_backend_interrupted_half_way_resumes(tmp_path):
    cache = tmp_path / "cache.jsonl"
    reqs = _requests(8)
    with FakeEndpoint(ok_budget=3, then_status=500) as srv:
        backend = _backend(srv.url, cache, max_concurrency=1, max_retries=1)
        with pytest.raises(EndpointError, match="3 of 8 new answers were cached"):
            backend.generate_many(reqs, decoding=SAMPLE, seed=0)
    assert len(cache.read_text().splitlines()) == 3
    with open(cache, "a") as f:  # a torn last line from a killed process is tolerated
        f.write('{"key": "abc", "te')
    with FakeEndpoint() as srv:
        texts = _backend(srv.url, cache).generate_many(reqs, decoding=SAMPLE, seed=0)
    assert len(srv.requests) == 8 - 3
    assert texts == [_answer_for(r.messages("single")) for r in reqs]


def test_multi_turn_layout_sends_one_pair_per_demonstration(tmp_path):
    req = IclRequest(
        record={"sample_id": "a"},
        prompt="p",
        query="Q\n答：",
        demos=[("D1\n答：", "t1"), ("D2\n答：", "t2")],
    )
    assert req.messages("multi_turn") == [
        {"role": "user", "content": "D1\n答："},
        {"role": "assistant", "content": "t1"},
        {"role": "user", "content": "D2\n答："},
        {"role": "assistant", "content": "t2"},
        {"role": "user", "content": "Q\n答："},
    ]
    with FakeEndpoint() as srv:
        _backend(srv.url, tmp_path / "c.jsonl", message_layout="multi_turn").generate_many(
            [req], decoding=SAMPLE, seed=0
        )
    assert [m["role"] for m in srv.requests[0]["messages"]] == [
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]


# ---- end to end ----------------------------------------------------------------------------
def test_icl_over_http_through_the_runner_never_leaks_the_key(
    shared_dir, tmp_path, monkeypatch, capfd
):
    """Uses shared/data/promptcblue_toy: real PromptCBLUE prompts (long Chinese inputs) are
    what the proxy token budget must handle; no model is loaded with this backend."""
    from moelora.harness.runner import run

    secret = "sk-SECRET-do-not-log-0123456789"
    monkeypatch.setenv("ICL_TEST_KEY", secret)
    with FakeEndpoint(fail_first=[500]) as srv:
        cfg = compose(
            [
                "method=icl",
                "data=promptcblue_toy",
                f"data.root={shared_dir / 'data/promptcblue_toy'}",
                "model=hf",
                "model.path=/unused",
                "logger=none",
                "progress=false",
                "trainer=smoke",
                "method.icl.backend=openai_compatible",
                f"method.icl.openai.base_url={srv.url}",
                "method.icl.openai.api_key_env=ICL_TEST_KEY",
                "method.icl.openai.retry_base_delay=0.01",
                "method.icl.max_context_tokens=1200",
            ]
        )
        run_dir = tmp_path / "job"
        run_dir.mkdir()
        assert run(cfg, run_dir) == 0
        sent = len(srv.requests)
    r = read_json(run_dir / "results.json")
    assert r["status"] == "success" and r["icl"]["backend"] == "openai_compatible"
    n_test = len((run_dir / "predictions.jsonl").read_text().splitlines())
    assert n_test >= 8 and sent == n_test + 1  # one retry, no duplicate
    budget = r["icl"]["prompt_budget"]
    assert r["icl"]["max_new_tokens"] == cfg.trainer.eval.max_new_tokens == 32  # smoke
    assert budget == int(1200 * 0.95) - 32 - 11  # 5 % margin, answer, chat framing
    rows = [json.loads(x) for x in (run_dir / "icl_prompts.jsonl").read_text().splitlines()]
    assert all(row["prompt_tokens"] <= budget for row in rows)
    assert all(row["n_demos"] <= 5 for row in rows)  # the toy set has 5 per task
    assert all(row["n_demos"] >= 3 or row["fallback"] for row in rows)
    assert sum(row["n_demos"] >= 3 for row in rows) > len(rows) // 2
    assert any(row["query_truncated"] for row in rows)  # a long MRG dialogue at this budget
    out, err = capfd.readouterr()
    for f in run_dir.rglob("*"):
        if f.is_file():
            assert secret not in f.read_text(errors="replace"), f
    assert secret not in out + err
    assert "ICL_TEST_KEY" in (run_dir / "config.yaml").read_text()  # the NAME is kept


@pytest.mark.slow
def test_icl_local_smoke_through_run_py(tiny_world, tmp_path):
    overrides = tiny_overrides(
        tiny_world, tmp_path, "method=icl", "hydra.run.dir=" + str(tmp_path / "job")
    )
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run(
        [sys.executable, "run.py", *overrides],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = read_json(tmp_path / "job" / "results.json")
    assert r["status"] == "success" and r["icl"]["backend"] == "local_hf"
    assert r["icl"]["token_counter"] == "TokenizerCounter"
    assert r["icl"]["max_context_tokens"] == 1024  # the tiny model's max_position_embeddings
    for task, s in r["icl"]["per_task"].items():
        assert s["prompt_tokens_max"] <= r["icl"]["prompt_budget"], task
        assert s["demos_min"] >= 3 or s["fallback"], task
        assert s["demos_max"] <= 10, task
