"""Every knob of the service, read from the environment with the PLUMBLINE_ prefix."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "PLUMBLINE_"


def is_service_variable(name: str) -> bool:
    """Whether an environment variable is in the service's own namespace (its settings, the
    CLI's key). A project never names one as a key (`api_key_env`): the worker sends that
    variable's value as a Bearer token to a URL the project chose, and the secret key alone
    would let it sign dashboard sessions for every project."""
    return name.upper().startswith(ENV_PREFIX)


DEFAULT_KEY_VARIABLES = (
    "OPENAI_API_KEY,ANTHROPIC_API_KEY,AZURE_OPENAI_API_KEY,GEMINI_API_KEY,GOOGLE_API_KEY,"
    "MISTRAL_API_KEY,COHERE_API_KEY,GROQ_API_KEY,TOGETHER_API_KEY,FIREWORKS_API_KEY,"
    "DEEPSEEK_API_KEY,OPENROUTER_API_KEY"
)
"""The usual model providers' key variables: what an operator is likely to have set for the
evaluators and endpoints projects configure."""


def key_variable_problem(name: str, allowed: frozenset[str]) -> str | None:
    """Why a project may not name `name` as a key variable (`api_key_env` of a checkpoint's
    endpoint or an LLM judge): the worker sends its value as a Bearer token to a URL the
    project chooses, so only the variables the operator listed
    (PLUMBLINE_EVALUATOR_KEY_ENVS) may be named — never AWS_SECRET_ACCESS_KEY and the like,
    and never the service's own settings. None when it may."""
    if is_service_variable(name):
        return f"{name} is a setting of the service, never sent as a key"
    if name not in allowed:
        listed = ", ".join(sorted(allowed)) or "none"
        return (
            f"{name} is not a key variable the operator allows to be sent "
            f"(PLUMBLINE_EVALUATOR_KEY_ENVS: {listed})"
        )
    return None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore")

    database_url: str = "sqlite:///./data/plumbline.db"
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = "http://127.0.0.1:8000"
    # Signs dashboard sessions and encrypts webhook secrets; generated under data/ when unset.
    secret_key: str | None = None
    data_dir: Path = Path("./data")

    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    max_events_per_request: int = Field(default=10_000, ge=1)
    max_text_chars: int = Field(default=16_384, ge=64)
    # Ingest is CPU-bound Python: two requests in flight keep one parsing while the other is
    # in the database, and bound memory to two bodies; more are refused with Retry-After.
    ingest_max_in_flight: int = Field(default=2, ge=1)
    ingest_retry_after_s: int = Field(default=1, ge=1)
    # A request finding every place taken waits this long for one before it is refused.
    ingest_queue_wait_s: float = Field(default=2.0, ge=0)
    # How far ahead of this server's clock an event's timestamp may be: room for ordinary
    # clock skew between clients and server. An event further ahead is refused (per event):
    # filed under a day not yet judged, it would never be counted where it belongs.
    ingest_max_clock_skew_s: int = Field(default=3600, ge=0)
    default_page_size: int = Field(default=50, ge=1, le=1000)
    max_page_size: int = Field(default=1000, ge=1)
    # Abuse limits, per process (in-memory token buckets; 0 turns one off). Writes are counted
    # per API key and sized so that real clients (batched ingest, CI jobs) never meet them;
    # dashboard sign-in is counted per client IP to make key guessing and form floods slow.
    write_rate_per_minute: int = Field(default=6000, ge=0)
    login_rate_per_minute: int = Field(default=20, ge=0)

    # Fail fast when PostgreSQL is unreachable: a request answers 503 within these bounds
    # instead of hanging on libpq's default (no connect timeout) or the pool's 30 s wait.
    db_connect_timeout_s: int = Field(default=5, ge=1)
    db_pool_timeout_s: float = Field(default=10.0, gt=0)
    webhook_allow_private: bool = False
    webhook_timeout_s: float = 10.0
    drift_cron: str = "15 0 * * *"
    retention_days: int = Field(default=90, ge=1)
    # Comma-separated names of the environment variables a project may name as a key
    # (`api_key_env` of a checkpoint endpoint or an LLM judge): see key_variable_problem.
    evaluator_key_envs: str = DEFAULT_KEY_VARIABLES
    # `plumbline serve` worker processes; 0 means one per core of the machine.
    workers: int = Field(default=0, ge=0)
    run_scheduler: bool = True
    run_workers: bool = True
    worker_poll_s: float = 1.0
    # How often the background loop re-evaluates each running canary (API reads and
    # POST /canaries/{id}/evaluate evaluate at once as well).
    canary_evaluate_every_s: int = Field(default=300, ge=1)
    print_admin_key: bool = True
    bootstrap_project: str = "demo"
    log_level: str = "INFO"
    log_json: bool = True

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def key_variables(self) -> frozenset[str]:
        """The names in `evaluator_key_envs`."""
        return frozenset(n.strip() for n in self.evaluator_key_envs.split(",") if n.strip())
