"""JSON logs with a request id, Prometheus metrics, and the request-size guard."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
import uuid
from typing import Any

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest as _generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.redaction import redacted_url

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

REGISTRY = CollectorRegistry()
HTTP_REQUESTS = Counter(
    "plumbline_http_requests_total",
    "HTTP requests by route template, method and status.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "plumbline_http_request_seconds",
    "HTTP request latency by route template.",
    ["method", "route"],
    registry=REGISTRY,
)


def metrics_payload() -> tuple[bytes, str]:
    return _generate_latest(REGISTRY), CONTENT_TYPE_LATEST


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": request_id_var.get(),
        }
        for key in ("method", "path", "status", "duration_ms"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is now, not what it was when logging was configured."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


class RedactedRequestUrls(logging.Filter):
    """httpx logs every request it sends (INFO) as `HTTP Request: POST <url> "HTTP/1.1 200
    OK"`, the URL whole: a webhook URL embeds the receiver's secret token (app.core.redaction).
    Whatever level a deployment gives httpx, the line keeps the method, scheme, host and
    status, and the URL argument is replaced by its redacted form before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redacted_url(str(arg)) if isinstance(arg, httpx.URL) else arg for arg in record.args
            )
        return True


class HiddenResultRows(logging.Filter):
    """SQLAlchemy's engine log at DEBUG prints every row a query reads (`Row (...)`), whole:
    a webhook endpoint's URL with its secret token, what clients sent. The line stays (one per
    row read), its contents do not; statement parameters are hidden by the engine itself
    (`hide_parameters`, app.core.db.make_engine)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "Row %r":
            record.msg, record.args = "Row (hidden)", ()
        return True


_REDACTED_REQUEST_URLS = RedactedRequestUrls()
_HIDDEN_RESULT_ROWS = HiddenResultRows()


def configure_logging(level: str, json_logs: bool) -> None:
    handler = StderrHandler()
    if json_logs:
        handler.setFormatter(JsonFormatter())
    root = logging.getLogger("plumbline")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # Added once however often the app is built (addFilter skips a filter already there).
    logging.getLogger("httpx").addFilter(_REDACTED_REQUEST_URLS)
    logging.getLogger("sqlalchemy.engine.Engine").addFilter(_HIDDEN_RESULT_ROWS)


access_log = logging.getLogger("plumbline.access")


class RequestContextMiddleware:
    """Request id in and out, an access log line without headers (they carry keys), metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")[:64]
        request_id = incoming if incoming.isprintable() and incoming else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status_code = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
                message.setdefault("headers", [])
                message["headers"].append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            HTTP_REQUESTS.labels(scope["method"], template, str(status_code)).inc()
            HTTP_LATENCY.labels(scope["method"], template).observe(elapsed)
            access_log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status_code,
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )
            request_id_var.reset(token)


class BodySizeLimitMiddleware:
    """413 before a too-large body is read whole: by Content-Length, or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return
        received = 0
        too_large = False

        async def counting_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, counting_receive, send)
        except _BodyTooLarge:
            await self._reject(send)

    async def _reject(self, send: Send) -> None:
        body = json.dumps(
            {
                "type": "about:blank",
                "title": "Payload too large",
                "status": 413,
                "detail": f"request body exceeds {self.max_bytes} bytes",
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(StarletteHTTPException):
    """An HTTPException so that FastAPI's body parsing passes it through unchanged."""

    def __init__(self) -> None:
        super().__init__(413, "request body is too large")
