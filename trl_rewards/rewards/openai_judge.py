"""LLM-as-a-judge through an OpenAI-compatible server (vLLM's `vllm serve`, SGLang, TGI's OpenAI API, OpenAI itself):
the same rubric and the same two readings as the local [`JudgeScorer`] (`inference/judge_scoring.py`).

What the server must support, by mode:

- `mode="expected"`: the legacy completions API, `POST {endpoint}/completions` with a list of prompts, `max_tokens:
  1`, `temperature: 0` and `logprobs: k` (the top-k log-probabilities of the generated token, returned as
  `choices[i].logprobs.top_logprobs[0]`, a `{token: logprob}` mapping). The prompt ends with `"Score: "`; the
  expected score is taken over the score tokens `"0"`…`"5"` among the top-k, renormalized (a score outside the
  top-k counts as 0; none inside gives `None`, counted). vLLM caps k at its `--max-logprobs` (default 20); OpenAI's
  completions API at 5. With a `tokenizer` (the served model's), the prompt is rendered with its chat template, as
  the local scorer does; without one the plain rubric text is sent, which instruct judges read less well.
- `mode="parse"`: greedy generation and the last `"Score: N"` of the text (none: `None`, counted), through
  `POST {endpoint}/chat/completions` (`api="chat"`, the default: the server applies its chat template; one request
  per judgement, `concurrency` at a time) or `/completions` (`api="completions"`, batched, rendered as above).

Each request gets `timeout` seconds and is retried `retries` times with exponential backoff on a connection error,
a timeout or a 5xx; a 4xx (bad model name, too many logprobs) is not retried. Either way the error names the URL.
The scorer holds only strings, numbers and the optional tokenizer, so it pickles.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..inference.judge_scoring import (
    DEFAULT_TEMPLATE,
    MODES,
    SCORE_PREFIX,
    check_template,
    expected_score_from_logprobs,
    fill_template,
    parse_score,
    render_judge_prompt,
)

APIS = ("chat", "completions")


class EndpointError(RuntimeError):
    """A request to the judge's server failed (after its retries, for a transient failure); names the URL."""


class OpenAIJudgeScorer:
    """
    Scores responses with a judge served behind an OpenAI-compatible API (see the module docstring).

    Args:
        endpoint (`str`): the API's base URL, e.g. `"http://localhost:8000/v1"`.
        model (`str`): the served model name.
        mode (`str`, *optional*, defaults to `"expected"`): `"expected"` or `"parse"`.
        template (`str`, *optional*): the judge prompt with `{prompt}` and `{response}` (default: the 5-point rubric).
        tokenizer (*optional*): the served model's tokenizer, to render its chat template for `/completions`.
        api (`str`, *optional*): `"chat"` or `"completions"` (default: `"completions"` for expected, `"chat"` for
            parse; expected needs `"completions"`).
        max_new_tokens (`int`, *optional*, defaults to `160`): parse mode's generation length.
        top_logprobs (`int`, *optional*, defaults to `20`): expected mode's k (at least 6 reads every score token
            when the server ranks them in its top 6).
        batch_size (`int`, *optional*, defaults to `16`): prompts per `/completions` request.
        concurrency (`int`, *optional*, defaults to `8`): requests in flight.
        timeout (`float`), retries (`int`), backoff (`float`): per request; attempts after the first; first wait
            (doubled each time).
        api_key (`str`, *optional*): sent as `Authorization: Bearer ...`.
    """

    def __init__(self, endpoint: str, model: str, mode: str = "expected", template: str = DEFAULT_TEMPLATE,
                 tokenizer=None, api: str | None = None, max_new_tokens: int = 160, top_logprobs: int = 20,
                 batch_size: int = 16, concurrency: int = 8, timeout: float = 60.0, retries: int = 3,
                 backoff: float = 0.5, api_key: str | None = None):  # fmt: skip
        if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"endpoint must be an http(s) URL such as 'http://localhost:8000/v1', got {endpoint!r}")
        if not model or not isinstance(model, str):
            raise ValueError(f"model must be the served model's name, got {model!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        api = api or ("completions" if mode == "expected" else "chat")
        if api not in APIS:
            raise ValueError(f"api must be one of {APIS}, got {api!r}")
        if mode == "expected" and api != "completions":
            raise ValueError("mode='expected' reads log-probabilities from the completions API: use api='completions'")
        for name, value in (("max_new_tokens", max_new_tokens), ("batch_size", batch_size),
                            ("concurrency", concurrency), ("top_logprobs", top_logprobs)):  # fmt: skip
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if retries < 0 or timeout <= 0 or backoff < 0:
            raise ValueError(f"retries and backoff must be >= 0 and timeout > 0, got {retries}, {backoff}, {timeout}")
        self.endpoint, self.model, self.mode, self.api = endpoint.rstrip("/"), model, mode, api
        self.template, self.tokenizer = check_template(template), tokenizer
        self.max_new_tokens, self.top_logprobs, self.batch_size = max_new_tokens, top_logprobs, batch_size
        self.concurrency, self.timeout, self.retries, self.backoff = concurrency, timeout, retries, backoff
        self.api_key = api_key
        self.n_unparsable = 0

    def _post(self, client, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        import httpx

        url = self.endpoint + path
        for attempt in range(self.retries + 1):
            try:
                response = client.post(url, json=payload, timeout=self.timeout)
            except httpx.HTTPError as error:  # refused, reset, timed out: transient
                failure = f"{type(error).__name__}: {error}"
            else:
                if response.status_code < 400:
                    try:
                        return response.json()
                    except ValueError as error:
                        raise EndpointError(f"{url} answered with a body that is not JSON: {error}") from error
                if response.status_code < 500:
                    raise EndpointError(f"{url} refused the request: HTTP {response.status_code}: {response.text}")
                failure = f"HTTP {response.status_code}: {response.text[:200]}"
            if attempt < self.retries:
                time.sleep(self.backoff * 2**attempt)
        raise EndpointError(f"{url} failed after {self.retries + 1} attempts: {failure}")

    def _completions(self, client, texts: list[str]) -> list[dict[str, Any]]:
        payload = {"model": self.model, "prompt": texts, "temperature": 0.0}
        if self.mode == "expected":
            payload.update(max_tokens=1, logprobs=self.top_logprobs)
        else:
            payload.update(max_tokens=self.max_new_tokens)
        body = self._post(client, "/completions", payload)
        choices = sorted(body.get("choices") or [], key=lambda c: c.get("index", 0))
        if len(choices) != len(texts):
            raise EndpointError(
                f"{self.endpoint}/completions returned {len(choices)} choices for {len(texts)} prompts"
            )
        return choices

    def _read_choice(self, choice: dict[str, Any]) -> float | None:
        """One judgement from a `/completions` choice; `None` when it holds no score."""
        if self.mode == "parse":
            return parse_score(choice.get("text") or "")
        top = (choice.get("logprobs") or {}).get("top_logprobs") or []
        return expected_score_from_logprobs(top[0]) if top and isinstance(top[0], dict) else None

    def _chat(self, client, prompt: Any, response: Any) -> float | None:
        content = fill_template(self.template, prompt, response)
        payload = {"model": self.model, "messages": [{"role": "user", "content": content}],
                   "max_tokens": self.max_new_tokens, "temperature": 0.0}  # fmt: skip
        choices = self._post(client, "/chat/completions", payload).get("choices") or []
        message = (choices[0].get("message") or {}) if choices else {}
        return parse_score(message.get("content") or "")

    def score(self, prompts: Sequence[Any], responses: Sequence[Any]) -> list[float | None]:
        import httpx

        if len(prompts) != len(responses):
            raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else None
        with httpx.Client(headers=headers) as client, ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            if self.api == "chat":
                scores = list(pool.map(lambda pr: self._chat(client, *pr), zip(prompts, responses, strict=True)))
            else:
                suffix = SCORE_PREFIX if self.mode == "expected" else ""
                texts = [render_judge_prompt(self.template, self.tokenizer, p, r) + suffix
                         for p, r in zip(prompts, responses, strict=True)]  # fmt: skip
                batches = [texts[i : i + self.batch_size] for i in range(0, len(texts), self.batch_size)]
                choices = [c for batch in pool.map(lambda b: self._completions(client, b), batches) for c in batch]
                scores = [self._read_choice(c) for c in choices]
        self.n_unparsable += sum(s is None for s in scores)
        return scores

    def __repr__(self) -> str:
        return f"OpenAIJudgeScorer(endpoint={self.endpoint!r}, model={self.model!r}, mode={self.mode!r})"
