"""LLM-as-judge through any OpenAI-compatible /chat/completions endpoint."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import BaseModel, Field, field_validator

from plumbline.evals.base import (
    PARAMS_CONFIG,
    EvaluationError,
    Evaluator,
    Phrase,
    Sample,
    Score,
    is_unit_interval,
    require_text,
)
from plumbline.evals.jsontext import parse_json, unfence
from plumbline.evals.text import clip

logger = logging.getLogger(__name__)

DEFAULT_RUBRIC = (
    "Judge whether the OUTPUT correctly and helpfully responds to the INPUT, using the "
    "EXPECTED answer and CONTEXT when given. 1 means fully correct and helpful; 0 means "
    "wrong, unsupported, harmful or unhelpful."
)
_SYSTEM_PROMPT = (
    "You are a strict evaluator. Grade the OUTPUT with this rubric:\n{rubric}\n\n"
    'Reply with only a JSON object: {{"score": <number from 0 to 1>, "reason": "<one sentence>"}}'
)
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class LLMJudgeParams(BaseModel):
    model_config = PARAMS_CONFIG

    base_url: str
    """Up to the API version, e.g. http://localhost:8000/v1; /chat/completions is appended."""
    model: Phrase
    api_key_env: str | None = None
    """Name of the environment variable holding the key; the key never enters a spec."""
    rubric: Phrase = DEFAULT_RUBRIC
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    max_retries: int = Field(default=2, ge=0, le=10)
    backoff_s: float = Field(default=1.0, ge=0, le=60)
    """First retry delay; doubles on each further retry."""

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not re.match(r"https?://[^/\s]+", url):
            raise ValueError("must be an http(s) URL such as http://localhost:8000/v1")
        return url.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, name: str | None) -> str | None:
        if name is not None and not _ENV_NAME_RE.fullmatch(name):
            raise ValueError("must be the NAME of an environment variable, not the key itself")
        return name


class LLMJudge(Evaluator[LLMJudgeParams]):
    """Not deterministic and not free: keep it out of suites that gate every commit."""

    name = "llm_judge"
    default_threshold = 0.7
    params_model = LLMJudgeParams
    # A call that times out or fails through every retry is an error, no score; the key is
    # read from its variable at each call, whatever its name.
    unscored_params = frozenset({"timeout_s", "max_retries", "backoff_s", "api_key_env"})
    #: Makes the transport each call connects through (None: httpx's own). The server's
    #: worker sets one that refuses cloud metadata and link-local addresses.
    transport_factory: Callable[[], httpx.BaseTransport] | None = None

    def _score(self, sample: Sample) -> Score:
        output = require_text("output", sample.output)
        api_key = self.api_key()
        payload = {
            "model": self.params.model,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": _SYSTEM_PROMPT.format(rubric=self.params.rubric)},
                {"role": "user", "content": _user_prompt(sample, output)},
            ],
        }
        response, attempts = self._post(payload, api_key)
        score, reason = parse_verdict(_message_content(response))
        return score, clip(reason, 500), {"model": self.params.model, "attempts": attempts}

    def api_key(self) -> str | None:
        """The key from the variable `api_key_env` names (None when it names none); an
        EvaluationError when that variable is not set. Read at each call; a server's worker
        asks it once before a run too, and fails the run rather than every row."""
        name = self.params.api_key_env
        if name is None:
            return None
        key = os.environ.get(name)
        if not key:
            raise EvaluationError(f"environment variable {name} (judge API key) is not set")
        return key

    def _post(self, payload: dict[str, Any], api_key: str | None) -> tuple[httpx.Response, int]:
        """Retry what is transient (timeouts, connection errors, 429, 5xx); a 4xx will not
        fix itself, so it fails the row at once."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        url = f"{self.params.base_url}/chat/completions"
        attempts = self.params.max_retries + 1
        problem = "no attempt made"
        transport = self.transport_factory() if self.transport_factory is not None else None
        with httpx.Client(timeout=self.params.timeout_s, transport=transport) as client:
            for attempt in range(attempts):
                if attempt:
                    time.sleep(self.params.backoff_s * 2 ** (attempt - 1))
                outcome = _send(client, url, payload, headers)
                if isinstance(outcome, httpx.Response):
                    return _accepted(outcome, api_key), attempt + 1
                problem = outcome
                logger.info("llm_judge attempt %d/%d failed: %s", attempt + 1, attempts, problem)
        raise EvaluationError(
            f"judge endpoint failed {attempts} time(s), last: {problem}", attempts=attempts
        )


def _send(
    client: httpx.Client, url: str, payload: dict[str, Any], headers: dict[str, str]
) -> httpx.Response | str:
    """The response, or why the attempt is worth retrying."""
    try:
        response = client.post(url, json=payload, headers=headers)
    except httpx.TransportError as exc:
        return type(exc).__name__
    if response.status_code == 429 or response.status_code >= 500:
        return f"HTTP {response.status_code}"
    return response


def _accepted(response: httpx.Response, api_key: str | None) -> httpx.Response:
    if response.is_success:
        return response
    body = response.text.replace(api_key, "[redacted]") if api_key else response.text
    raise EvaluationError(
        f"judge endpoint rejected the request: HTTP {response.status_code}",
        status=response.status_code,
        body=clip(body),
    )


def _user_prompt(sample: Sample, output: str) -> str:
    sections = {
        "INPUT": sample.input,
        "OUTPUT": output,
        "EXPECTED": sample.expected,
        "CONTEXT": sample.context,
    }
    return "\n\n".join(
        f"{title}:\n{_as_text(value)}" for title, value in sections.items() if value is not None
    )


def _as_text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _message_content(response: httpx.Response) -> str:
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, LookupError, TypeError):
        content = None
    if not isinstance(content, str):
        raise EvaluationError(
            "judge response has no choices[0].message.content", body=clip(response.text)
        )
    return content


def parse_verdict(content: str) -> tuple[float, str]:
    """Accept exactly {"score": 0..1, "reason": str}, optionally in a ```json fence."""
    try:
        verdict = parse_json(unfence(content))
    except ValueError as exc:
        raise EvaluationError(f"judge reply is not JSON: {exc}", raw=clip(content)) from None
    if not isinstance(verdict, dict) or set(verdict) != {"score", "reason"}:
        raise EvaluationError(
            'judge reply must be a JSON object with exactly "score" and "reason"', raw=clip(content)
        )
    score, reason = verdict["score"], verdict["reason"]
    if not is_unit_interval(score):
        raise EvaluationError(
            f"judge score must be a number in [0, 1], got {score!r}", raw=clip(content)
        )
    if not isinstance(reason, str):
        raise EvaluationError("judge reason must be a string", raw=clip(content))
    return float(score), reason
