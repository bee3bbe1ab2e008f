"""ICL generation backends (docs/methods.md §2.2): a local HF causal LM, or an OpenAI-compatible
chat-completions endpoint over HTTP.

Both answer a list of :class:`IclRequest` (the packed few-shot prompt, plus its parts for the
multi-turn layout) with the decoding settings of §1.4. The HTTP client uses only the
standard library: a bounded thread pool, retries with exponential back-off on 429 / 5xx /
connection errors, and a JSONL response cache keyed by (backend, model, prompt hash,
decoding parameters, seed), so a rerun sends only what has not been answered yet. The API
key is read from the environment variable named in the config and is never written out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moelora.engine.generation import DecodingSettings, GenerationResult, generate_predictions

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 409, 425, 429}) | frozenset(range(500, 600))


@dataclass
class IclRequest:
    """One test example's prompt.

    Attributes:
        record: the test record (its ``target`` is ignored).
        prompt: the whole few-shot text (demonstrations, blank lines, query).
        demos: ``(demonstration query text, its answer)`` pairs, for the multi-turn layout.
        query: the query text, answer cue included.
    """

    record: dict[str, Any]
    prompt: str
    demos: list[tuple[str, str]] = field(default_factory=list)
    query: str = ""

    def messages(self, layout: str) -> list[dict[str, str]]:
        """Chat messages: one user turn with the whole prompt (``single``) or one user /
        assistant pair per demonstration, then the query (``multi_turn``)."""
        if layout == "single":
            return [{"role": "user", "content": self.prompt}]
        if layout == "multi_turn":
            turns: list[dict[str, str]] = []
            for question, answer in self.demos:
                turns += [
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": answer},
                ]
            return [*turns, {"role": "user", "content": self.query}]
        raise ValueError(f"icl.message_layout={layout!r}; use 'single' or 'multi_turn'")


# ---- local HF model -------------------------------------------------------------------
class LocalHFBackend:
    """A local causal LM: batched, left-padded generation through the shared generation code.

    Args:
        model: the frozen base model.
        encoder: the run's :class:`moelora.data.encoding.Encoder`, its ``max_source_length`` set to the
            ICL prompt budget so that prompts are not cut to the fine-tuning length.
        device: where the model lives.
        chat_template: wrap every prompt as a single user turn with the model's chat template.
    """

    name = "local_hf"

    def __init__(
        self,
        model: Any,
        encoder: Any,
        *,
        device: Any,
        model_name: str,
        chat_template: bool = False,
        progress: bool = False,
    ) -> None:
        self.model = model
        self.encoder = encoder
        self.device = device
        self.model_name = model_name
        self.chat_template = chat_template
        self.progress = progress
        self.stats: dict[str, Any] = {}
        self.generation: GenerationResult | None = None
        if chat_template and not getattr(encoder.tokenizer, "chat_template", None):
            raise ValueError(
                f"icl.local.chat_template=true but the tokenizer of {model_name} "
                "has no chat template; set it to false"
            )

    def wrap(self, prompt: str) -> str:
        if not self.chat_template:
            return prompt
        return self.encoder.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )

    def template_overhead(self, counter: Any) -> int:
        return counter.count(self.wrap("")) if self.chat_template else 0

    def generate_many(
        self, requests: Sequence[IclRequest], *, decoding: DecodingSettings, seed: int
    ) -> list[str]:
        records = [{**r.record, "input": self.wrap(r.prompt), "target": ""} for r in requests]
        self.generation = generate_predictions(
            self.model,
            self.encoder,
            records,
            decoding=decoding,
            seed=seed,
            device=self.device,
            progress=self.progress,
        )
        self.stats = {"requests": len(records)}
        return [p["target"] for p in self.generation.predictions]


# ---- response cache ---------------------------------------------------------------------
def sha256(obj: Any) -> str:
    text = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ResponseCache:
    """Append-only JSONL of answered requests; every line is flushed and synced as soon as
    its answer arrives, so an interrupted run keeps all it got. A torn last line is skipped."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._entries: dict[str, str] = {}
        if self.path.is_file():
            with self.path.open(encoding="utf-8") as f:
                for lineno, line in enumerate(f, start=1):
                    try:
                        entry = json.loads(line)
                        self._entries[entry["key"]] = entry["text"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        log.warning("%s:%d: unreadable cache line skipped", self.path, lineno)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> str | None:
        return self._entries.get(key)

    def put(self, key: str, text: str, meta: dict[str, Any]) -> None:
        line = json.dumps({"key": key, **meta, "text": text}, ensure_ascii=False)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())
            self._entries[key] = text


# ---- OpenAI-compatible HTTP endpoint ----------------------------------------------------
class EndpointError(RuntimeError):
    """The endpoint refused a request (non-retryable), or retries ran out."""


@dataclass
class OpenAICompatibleBackend:
    """Chat-completions client (``POST {base_url}/chat/completions``).

    Args:
        base_url: e.g. ``http://127.0.0.1:8000/v1`` (a local vLLM / llama.cpp server) or a
            hosted API's base URL.
        model: the served model name, sent with every request and part of the cache key.
        api_key_env: NAME of the environment variable holding the key (unset: no
            ``Authorization`` header, fine for local servers).
        cache_path: the JSONL response cache.
        message_layout: ``single`` | ``multi_turn``.
        max_concurrency: requests in flight at once.
        max_retries: retries per request after the first attempt.
        retry_base_delay: seconds before the first retry; doubled at each further retry.
        retry_max_delay: cap on one back-off sleep (also caps a server's Retry-After).
        timeout: seconds per HTTP request.
    """

    base_url: str
    model: str
    cache_path: str | os.PathLike
    api_key_env: str | None = "OPENAI_API_KEY"
    message_layout: str = "single"
    max_concurrency: int = 4
    max_retries: int = 5
    retry_base_delay: float = 1.0
    retry_max_delay: float = 30.0
    timeout: float = 60.0
    stats: dict[str, int] = field(default_factory=dict)
    name: str = dataclasses.field(default="openai_compatible", init=False)

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise ValueError("icl.openai.max_concurrency must be at least 1")
        if self.max_retries < 0:
            raise ValueError("icl.openai.max_retries must be >= 0")
        self.cache = ResponseCache(self.cache_path)
        self._api_key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if self.api_key_env and not self._api_key:
            log.warning(
                "environment variable %s is not set; sending requests without an API key",
                self.api_key_env,
            )
        self._stats_lock = threading.Lock()
        self.stats = {"requests_sent": 0, "retries": 0, "cache_hits": 0, "answered": 0}

    def __repr__(self) -> str:  # never show the key
        return f"OpenAICompatibleBackend(base_url={self.base_url!r}, model={self.model!r})"

    @property
    def model_name(self) -> str:
        return self.model

    @staticmethod
    def decoding_params(decoding: DecodingSettings) -> dict[str, Any]:
        if decoding.mode == "greedy":
            return {"temperature": 0.0, "max_tokens": decoding.max_new_tokens}
        if decoding.mode != "sample":
            raise ValueError(f"decoding={decoding.mode!r}; use 'sample' or 'greedy'")
        return {
            "temperature": decoding.temperature,
            "top_p": decoding.top_p,
            "max_tokens": decoding.max_new_tokens,
        }

    def cache_key(self, messages: list[dict[str, str]], params: dict[str, Any], seed: int) -> str:
        return sha256(
            {
                "backend": self.name,
                "model": self.model,
                "prompt_sha256": sha256(messages),
                "decoding": params,
                "seed": seed,
            }
        )

    def generate_many(
        self, requests: Sequence[IclRequest], *, decoding: DecodingSettings, seed: int
    ) -> list[str]:
        """Answer every request, from the cache where possible; the rest go out at most
        ``max_concurrency`` at a time. On a failure the requests not yet started are
        cancelled, the answers already received stay cached, and the error is raised."""
        params = self.decoding_params(decoding)
        keyed = []
        for r in requests:
            messages = r.messages(self.message_layout)
            keyed.append((self.cache_key(messages, params, seed), messages))
        pending = {k: m for k, m in keyed if self.cache.get(k) is None}
        self._bump("cache_hits", len(keyed) - sum(1 for k, _ in keyed if k in pending))
        if pending:
            with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
                futures = [
                    pool.submit(self._answer, k, m, params, seed) for k, m in pending.items()
                ]
                done, not_done = wait(futures, return_when=FIRST_EXCEPTION)
                for f in not_done:
                    f.cancel()
                errors = [
                    f.exception()
                    for f in futures
                    if f.done() and not f.cancelled() and f.exception() is not None
                ]
            if errors:
                answered = sum(1 for k in pending if self.cache.get(k) is not None)
                raise EndpointError(
                    f"{len(errors)} request(s) to {self.base_url} failed ({answered} of "
                    f"{len(pending)} new answers were cached; a rerun resumes from the cache): "
                    f"{errors[0]}"
                ) from errors[0]
        return [self.cache.get(k) or "" for k, _ in keyed]

    def _bump(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[key] += n

    def _answer(
        self, key: str, messages: list[dict[str, str]], params: dict[str, Any], seed: int
    ) -> None:
        body = {"model": self.model, "messages": messages, "seed": seed, **params}
        text = self._post_with_retries(body)
        self.cache.put(
            key,
            text,
            {
                "backend": self.name,
                "model": self.model,
                "prompt_sha256": sha256(messages),
                "decoding": params,
                "seed": seed,
            },
        )
        self._bump("answered")

    def _post_with_retries(self, body: dict[str, Any]) -> str:
        url = self.base_url.rstrip("/") + "/chat/completions"
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        for attempt in range(self.max_retries + 1):
            retry_after: float | None = None
            self._bump("requests_sent")
            try:
                req = urllib.request.Request(url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    payload = json.loads(resp.read().decode("utf-8"))
                return _content(payload, url)
            except urllib.error.HTTPError as e:
                detail = e.read()[:300].decode("utf-8", "replace")
                if e.code not in RETRYABLE_STATUS:
                    raise EndpointError(f"{url}: HTTP {e.code}: {detail}") from None
                reason = f"HTTP {e.code}"
                retry_after = _retry_after(e.headers.get("Retry-After") if e.headers else None)
            except (
                urllib.error.URLError,
                http.client.HTTPException,
                ConnectionError,
                TimeoutError,
            ) as e:
                reason = f"{type(e).__name__}: {e}"
            if attempt == self.max_retries:
                raise EndpointError(f"{url}: giving up after {attempt + 1} attempts ({reason})")
            delay = min(self.retry_max_delay, self.retry_base_delay * 2**attempt)
            if retry_after is not None:
                delay = min(self.retry_max_delay, max(delay, retry_after))
            log.warning(
                "%s: %s; retry %d/%d in %.2fs", url, reason, attempt + 1, self.max_retries, delay
            )
            self._bump("retries")
            time.sleep(delay)
        raise AssertionError("unreachable")


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _content(payload: dict[str, Any], url: str) -> str:
    try:
        content = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise EndpointError(f"{url}: unexpected response shape {str(payload)[:200]}") from None
    return (content or "").strip()
