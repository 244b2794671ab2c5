"""The HTTP side of the LLM judge: one OpenAI-compatible chat endpoint, a request budget,
retries with backoff, and the probe `validate` sends.

Any server that speaks the OpenAI chat-completions API works: the OpenAI API, `vllm serve`,
TGI, llama.cpp's server. The `openai` client does the HTTP; its own retries are off
(`max_retries=0`) so that every request, retries included, is counted against `max_requests`
here and the backoff is ours: exponential with jitter, or the server's `Retry-After`.
The key is taken from the environment variable the suite names and handed to the client
only; no message here contains it.
"""
from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass

from bench.errors import BenchError

RETRY_STATUSES = (408, 409, 429)      # and every 5xx: the request may succeed when repeated
_BACKOFF_CAP_S = 30.0


class JudgeUnavailable(BenchError):
    """The judge cannot answer (unreachable after retries, or a refusal a retry cannot change)."""


class BudgetSpent(BenchError):
    """`max_requests` requests were sent: no further one is (the stage stops cleanly)."""


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    top_logprobs: dict | None = None   # first generated token's alternatives: token -> log-prob (when asked)


def api_key(config) -> str | None:
    """The key from the environment variable `config.api_key_env` names (None when unset or empty)."""
    value = os.environ.get(config.api_key_env or "", "")
    return value or None


class JudgeClient:
    """Chat completions against `config.base_url` for `config.model`; thread-safe."""

    def __init__(self, config, *, key: str, backoff_s: float = 0.5):
        import openai

        self.config, self.backoff_s = config, backoff_s
        self._client = openai.OpenAI(base_url=config.base_url, api_key=key, max_retries=0, timeout=config.timeout_s)
        self._lock = threading.Lock()
        self.requests = 0      # HTTP requests sent by this client (retries included)
        self.retried = 0

    def _take_request(self) -> None:
        with self._lock:
            budget = self.config.max_requests
            if budget is not None and self.requests >= budget:
                raise BudgetSpent(f"scoring.judge.max_requests: the budget of {budget} requests is spent")
            self.requests += 1

    def complete(self, messages: list[dict], *, max_tokens: int, logprobs: bool = False) -> Completion:
        """One answer; retried on 429, 408/409, 5xx, timeouts, refused connections and unreadable
        bodies, up to `max_retries` times. Raises JudgeUnavailable or BudgetSpent. With
        `logprobs`, the first token's top-5 alternatives come back too (AlpacaEval 2 reads its
        preference from them), where the server returns them."""
        import openai

        retries = self.config.max_retries
        for attempt in range(retries + 1):
            self._take_request()
            wait = None
            try:
                extra = {"logprobs": True, "top_logprobs": 5} if logprobs else {}
                response = self._client.chat.completions.create(
                    model=self.config.model, messages=messages, temperature=self.config.temperature,
                    max_tokens=max_tokens, **extra)
                choice = response.choices[0]
                usage = getattr(response, "usage", None)
                return Completion(text=choice.message.content or "",
                                  prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                                  completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
                                  top_logprobs=_first_token_logprobs(choice) if logprobs else None)
            except openai.APIStatusError as err:
                if err.status_code not in RETRY_STATUSES and err.status_code < 500:
                    raise JudgeUnavailable(f"judge {self.config.model!r} at {self.config.base_url} refused a request: "
                                           f"HTTP {err.status_code} {_short(err)}") from None
                what, wait = f"HTTP {err.status_code}", _retry_after(err)
            except openai.APIConnectionError as err:   # refused, reset, timed out (APITimeoutError)
                what = "timed out" if isinstance(err, openai.APITimeoutError) else f"connection failed ({_short(err)})"
            except (openai.APIResponseValidationError, AttributeError, IndexError, TypeError, ValueError) as err:
                what = f"unreadable answer ({type(err).__name__})"
            if attempt == retries:
                raise JudgeUnavailable(f"judge at {self.config.base_url}: {what}, {retries + 1} attempts") from None
            with self._lock:
                self.retried += 1
            time.sleep(wait if wait is not None else self._backoff(attempt))
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int) -> float:
        # Full jitter (AWS architecture blog, "Exponential Backoff and Jitter"): requests that
        # failed together do not all come back together.
        return random.uniform(0.5, 1.0) * min(_BACKOFF_CAP_S, self.backoff_s * 2 ** attempt)

    def served_models(self) -> list[str] | None:
        """The model ids the server lists at /models (None when it offers no such list)."""
        import openai

        try:
            return [m.id for m in self._client.models.list()]
        except openai.NotFoundError:
            return None


def _first_token_logprobs(choice) -> dict | None:
    """token -> log-prob of the first generated token's top alternatives (None when not returned)."""
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    if not content:
        return None
    first = content[0]
    out = {alt.token: float(alt.logprob) for alt in (getattr(first, "top_logprobs", None) or [])}
    out.setdefault(first.token, float(first.logprob))
    return out


def _retry_after(err) -> float | None:
    headers = getattr(getattr(err, "response", None), "headers", None) or {}
    try:
        value = float(headers.get("retry-after"))
    except (TypeError, ValueError):
        return None
    return min(max(value, 0.0), _BACKOFF_CAP_S)


def _short(err, limit: int = 160) -> str:
    text = " ".join(str(getattr(err, "message", None) or err).split())
    return text[:limit]


def probe(config) -> str:
    """One tiny request to the configured judge (at `validate`, and before `run` starts any stage):
    the key is set, the server answers, it serves the model, a chat completion comes back.
    Returns a note; raises BenchError naming the setting, in one line."""
    import openai

    key = api_key(config)
    if key is None:
        raise BenchError(f"scoring.judge.api_key_env: the environment variable {config.api_key_env!r} is not set "
                         "(for a local server without a key, set it to EMPTY)")
    quick = config.model_copy(update={"max_retries": 1, "timeout_s": min(config.timeout_s, 15.0), "max_requests": None})
    client = JudgeClient(quick, key=key, backoff_s=0.2)
    try:
        served = client.served_models()
    except openai.AuthenticationError:
        raise BenchError(f"scoring.judge.api_key_env: {config.base_url} refused the key in ${config.api_key_env} "
                         "(HTTP 401)") from None
    except openai.APIConnectionError as err:
        raise BenchError(f"scoring.judge.base_url: cannot reach {config.base_url} ({_short(err)})") from None
    except openai.APIStatusError as err:
        served = None if err.status_code < 500 else []
        if served == []:
            raise BenchError(f"scoring.judge.base_url: {config.base_url} answered HTTP {err.status_code} "
                             f"to GET /models") from None
    if served is not None and config.model not in served:
        raise BenchError(f"scoring.judge.model: {config.base_url} does not serve {config.model!r}; it serves: "
                         f"{', '.join(served) or 'nothing'}")
    try:
        client.complete([{"role": "user", "content": "Reply with OK."}], max_tokens=1)
    except JudgeUnavailable as err:
        raise BenchError(f"scoring.judge: the probe request failed: {err}") from None
    return f"judge: {config.model} at {config.base_url} answered a probe request"
