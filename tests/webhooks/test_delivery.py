"""Webhook delivery against a real loopback receiver that verifies every signature.

The only stand-in is ``FakeDns``: it replaces the OS resolver (``socket.getaddrinfo``) for
made-up ``.example`` names, to stage DNS answers such as rebinding; real lookups pass through.
"""

from __future__ import annotations

import base64
import json
import random
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from app.webhooks.delivery import (
    MAX_DELAY_S,
    RESPONSE_EXCERPT_BYTES,
    USER_AGENT,
    ForbiddenTarget,
    GuardedTransport,
    check_url,
    envelope,
    new_webhook_secret,
    next_delay,
    parse_retry_after,
    send,
    sign,
)

PUBLIC_IP = "93.184.215.14"  # example.com; only ever resolved to, never connected to


# --- a real receiver -------------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"thanks"
    delay_s: float = 0.0


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    payload: Any
    verify_error: str | None


class _ReceiverServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, secret: str) -> None:
        super().__init__(("127.0.0.1", 0), _ReceiverHandler)
        self.secret = secret
        self.reply = Reply()
        self.received: list[Received] = []
        self.stopping = threading.Event()


class _ReceiverHandler(BaseHTTPRequestHandler):
    """Behaves like a customer's endpoint: 401 unless the Standard Webhooks signature verifies."""

    server: _ReceiverServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            payload, error = Webhook(self.server.secret).verify(body, headers), None
        except WebhookVerificationError as exc:
            payload, error = None, str(exc)
        self.server.received.append(Received(headers, body, payload, error))
        reply = self.server.reply if error is None else Reply(401, body=b"bad signature")
        self.server.stopping.wait(reply.delay_s)
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up first (timeout tests)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Receiver:
    def __init__(self, secret: str, tls: ssl.SSLContext | None = None) -> None:
        self._server = _ReceiverServer(secret)
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    @property
    def received(self) -> list[Received]:
        return self._server.received

    def will_reply(self, reply: Reply) -> None:
        self._server.reply = reply

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class FakeDns:
    """Answers for made-up names, one answer per lookup (the last one repeats)."""

    def __init__(self, real: Callable[..., Any]) -> None:
        self._real = real
        self._answers: dict[str, list[list[str]]] = {}

    def answer(self, host: str, *answers: list[str]) -> None:
        self._answers[host] = list(answers)

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in self._answers:
            return self._real(host, port, *args, **kwargs)
        queue = self._answers[host]
        addresses = queue.pop(0) if len(queue) > 1 else queue[0]
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        # Numeric lookups of the staged addresses: real result tuples, no DNS traffic.
        return [
            info for address in addresses for info in self._real(address, port, *args, **kwargs)
        ]


@pytest.fixture
def secret() -> str:
    return new_webhook_secret()


@pytest.fixture
def receiver(secret: str) -> Iterator[Receiver]:
    with Receiver(secret) as running:
        yield running


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> FakeDns:
    dns = FakeDns(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", dns)
    return dns


def signed_event(secret: str, data: dict[str, Any] | None = None) -> tuple[dict[str, str], bytes]:
    now = datetime.now(UTC)
    body = envelope("alert.opened", data or {"alert_id": 1}, now, subject="alert:1", sequence=1)
    return sign(secret, f"msg_{uuid4().hex}", now, body), body


# --- secrets, signing, envelope --------------------------------------------------------------


def test_new_secret_is_standard_webhooks_format_and_unique() -> None:
    secret = new_webhook_secret()
    assert secret.startswith("whsec_")
    assert 24 <= len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) <= 32
    assert secret != new_webhook_secret()


def test_signed_headers_verify_with_standardwebhooks(secret: str) -> None:
    headers, body = signed_event(secret)
    assert Webhook(secret).verify(body, headers) == json.loads(body)
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == USER_AGENT


def test_signing_converts_non_utc_timestamps_instead_of_relabelling(secret: str) -> None:
    now_in_kolkata = datetime.now(timezone(timedelta(hours=5, minutes=30)))
    body = envelope(
        "champion.changed", {"model": "m"}, now_in_kolkata, subject="model:1", sequence=1
    )
    headers = sign(secret, "msg_1", now_in_kolkata, body)
    assert int(headers["webhook-timestamp"]) == int(now_in_kolkata.timestamp())
    Webhook(secret).verify(body, headers)


def test_tampered_body_fails_verification(secret: str) -> None:
    headers, body = signed_event(secret)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b'"alert_id":1', b'"alert_id":2'), headers)


def test_naive_timestamps_are_refused(secret: str) -> None:
    naive = datetime(2024, 5, 1, 12, 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        envelope("gate.blocked", {}, naive, subject="gate:1", sequence=1)
    with pytest.raises(ValueError, match="timezone-aware"):
        sign(secret, "msg_1", naive, b"{}")


def test_envelope_is_compact_json_with_utc_timestamp() -> None:
    at = datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    body = envelope("gate.blocked", {"gate": "g1", "score": 0.5}, at, subject="gate:4", sequence=9)
    assert body == (
        b'{"type":"gate.blocked","timestamp":"2024-05-01T12:00:00.000Z",'
        b'"subject":"gate:4","sequence":9,"data":{"gate":"g1","score":0.5}}'
    )


# --- sending to the real receiver ------------------------------------------------------------


def test_valid_delivery_is_verified_by_receiver_and_ok(secret: str, receiver: Receiver) -> None:
    headers, body = signed_event(secret)
    attempt = send(receiver.url, headers, body, timeout_s=5, allow_private=True)
    assert attempt.ok and attempt.status_code == 200 and attempt.error is None
    assert attempt.response_excerpt == "thanks"
    [received] = receiver.received
    assert received.verify_error is None
    assert received.payload == json.loads(body)
    assert received.headers["user-agent"] == USER_AGENT


def test_tampered_delivery_is_rejected_by_receiver(secret: str, receiver: Receiver) -> None:
    headers, body = signed_event(secret)
    tampered = body.replace(b'"alert_id":1', b'"alert_id":2')
    attempt = send(receiver.url, headers, tampered, timeout_s=5, allow_private=True)
    assert not attempt.ok and attempt.status_code == 401 and not attempt.retryable
    assert receiver.received[0].verify_error == "No matching signature found"


def test_503_with_retry_after_seconds(secret: str, receiver: Receiver) -> None:
    receiver.will_reply(Reply(503, {"Retry-After": "7"}))
    attempt = send(receiver.url, *signed_event(secret), timeout_s=5, allow_private=True)
    assert (attempt.ok, attempt.status_code, attempt.retryable) == (False, 503, True)
    assert attempt.retry_after_s == 7


def test_429_with_retry_after_http_date(secret: str, receiver: Receiver) -> None:
    in_30_s = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    receiver.will_reply(Reply(429, {"Retry-After": in_30_s}))
    attempt = send(receiver.url, *signed_event(secret), timeout_s=5, allow_private=True)
    assert attempt.retryable
    assert attempt.retry_after_s is not None and 25 <= attempt.retry_after_s <= 30


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(500, True), (502, True), (408, True), (400, False), (404, False), (410, False)],
)
def test_error_statuses_classified(
    secret: str, receiver: Receiver, status: int, retryable: bool
) -> None:
    receiver.will_reply(Reply(status, body=b"nope"))
    attempt = send(receiver.url, *signed_event(secret), timeout_s=5, allow_private=True)
    assert (attempt.ok, attempt.status_code, attempt.retryable) == (False, status, retryable)
    assert attempt.response_excerpt == "nope" and attempt.retry_after_s is None


def test_redirect_is_not_followed(secret: str, receiver: Receiver) -> None:
    receiver.will_reply(Reply(302, {"Location": f"http://127.0.0.1:{receiver.port}/elsewhere"}))
    attempt = send(receiver.url, *signed_event(secret), timeout_s=5, allow_private=True)
    assert (attempt.ok, attempt.status_code, attempt.retryable) == (False, 302, False)
    assert attempt.error is not None and "redirect" in attempt.error
    assert len(receiver.received) == 1


def test_slow_receiver_times_out(secret: str, receiver: Receiver) -> None:
    receiver.will_reply(Reply(delay_s=10))
    attempt = send(receiver.url, *signed_event(secret), timeout_s=0.3, allow_private=True)
    assert (attempt.ok, attempt.error, attempt.retryable) == (False, "timeout", True)
    assert 300 <= attempt.duration_ms < 2000


def test_connection_refused_is_retryable(secret: str) -> None:
    with socket.socket() as bound_not_listening:
        bound_not_listening.bind(("127.0.0.1", 0))
        port = bound_not_listening.getsockname()[1]
        attempt = send(
            f"http://127.0.0.1:{port}/", *signed_event(secret), timeout_s=2, allow_private=True
        )
    assert not attempt.ok and attempt.retryable and attempt.status_code is None
    assert attempt.error is not None and "connection refused" in attempt.error.lower()


def test_response_excerpt_is_bounded_and_safely_decoded(secret: str, receiver: Receiver) -> None:
    receiver.will_reply(Reply(body=b"\xff" + b"x" * 5000))
    attempt = send(receiver.url, *signed_event(secret), timeout_s=5, allow_private=True)
    assert len(attempt.response_excerpt) == RESPONSE_EXCERPT_BYTES
    assert attempt.response_excerpt.startswith("\ufffdxxx")


def test_send_refuses_private_target_without_contacting_it(secret: str, receiver: Receiver) -> None:
    attempt = send(receiver.url, *signed_event(secret), timeout_s=2, allow_private=False)
    assert attempt.error is not None and attempt.error.startswith("forbidden target")
    assert not attempt.retryable and receiver.received == []


# --- connect-time guard ----------------------------------------------------------------------


def test_dns_rebinding_after_enqueue_check_is_refused_at_connect(
    secret: str, receiver: Receiver, fake_dns: FakeDns
) -> None:
    fake_dns.answer("hooks.rebind.example", [PUBLIC_IP], ["127.0.0.1"])
    url = f"http://hooks.rebind.example:{receiver.port}/hooks"
    check_url(url, allow_private=False)  # enqueue time: the name looked public
    attempt = send(url, *signed_event(secret), timeout_s=2, allow_private=False)
    assert attempt.error is not None and attempt.error.startswith("forbidden target")
    assert "127.0.0.1" in attempt.error and not attempt.retryable
    assert receiver.received == []


def test_connect_time_resolution_reaches_receiver_when_private_allowed(
    secret: str, receiver: Receiver, fake_dns: FakeDns
) -> None:
    fake_dns.answer("hooks.internal.example", ["127.0.0.1"])
    url = f"http://hooks.internal.example:{receiver.port}/hooks"
    attempt = send(url, *signed_event(secret), timeout_s=2, allow_private=True)
    assert attempt.ok
    [received] = receiver.received
    assert received.verify_error is None
    assert received.headers["host"] == f"hooks.internal.example:{receiver.port}"


def test_never_allowed_address_refused_at_connect_even_when_private_allowed(
    secret: str, receiver: Receiver, fake_dns: FakeDns
) -> None:
    # Linux delivers connections to 0.0.0.0 to local listeners, so this stays on loopback.
    fake_dns.answer("hooks.zero.example", ["0.0.0.0"])
    url = f"http://hooks.zero.example:{receiver.port}/hooks"
    attempt = send(url, *signed_event(secret), timeout_s=2, allow_private=True)
    assert attempt.error is not None and "unspecified address" in attempt.error
    assert not attempt.retryable and receiver.received == []


def test_unresolvable_host_at_send_is_retryable(secret: str, fake_dns: FakeDns) -> None:
    fake_dns.answer("gone.example", [])
    attempt = send("http://gone.example/", *signed_event(secret), 2, allow_private=False)
    assert attempt.retryable and attempt.error is not None and "resolve" in attempt.error


def _self_signed_certificate(hostname: str, directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_uses_original_hostname_for_sni_and_certificate(
    secret: str, fake_dns: FakeDns, tmp_path: Path
) -> None:
    hostname = "hooks.tls.example"
    cert_path, key_path = _self_signed_certificate(hostname, tmp_path)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert_path, key_path)
    sni_names: list[str | None] = []
    server_tls.sni_callback = lambda _sock, name, _ctx: sni_names.append(name)
    fake_dns.answer(hostname, ["127.0.0.1"])
    headers, body = signed_event(secret)
    client_tls = ssl.create_default_context(cafile=cert_path)
    with (
        Receiver(secret, tls=server_tls) as receiver,
        httpx.Client(transport=GuardedTransport(allow_private=True, verify=client_tls)) as client,
    ):
        response = client.post(
            f"https://{hostname}:{receiver.port}/", headers=headers, content=body
        )
    assert response.status_code == 200
    assert sni_names == [hostname]
    assert receiver.received[0].verify_error is None


# --- URL policy ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://[fd00:ec2::254]/", "cloud metadata"),
        ("http://100.100.100.200/", "cloud metadata"),
        ("http://metadata.google.internal/computeMetadata/v1/", "cloud metadata"),
        ("http://[::ffff:169.254.169.254]/", "cloud metadata"),
        ("http://[64:ff9b::a9fe:a9fe]/", "cloud metadata"),
        ("http://169.254.10.1/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://0.1.2.3/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
        ("http://[ff02::1]/", "multicast"),
        ("http://240.0.0.1/", "reserved"),
        ("http://255.255.255.255/", "reserved"),
        ("ftp://example.com/", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("http://user:pw@example.com/", "credentials"),
    ],
)
def test_check_url_refuses_even_with_allow_private(url: str, reason: str) -> None:
    with pytest.raises(ForbiddenTarget, match=reason):
        check_url(url, allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hooks",
        "http://localhost/hooks",
        "http://[::1]/",
        "http://10.1.2.3/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://[fc00::1]/",
        "http://[fd12:3456::1]/",
        "http://[::ffff:10.0.0.1]/",
    ],
)
def test_check_url_private_targets_need_allow_private(url: str) -> None:
    with pytest.raises(ForbiddenTarget, match="private"):
        check_url(url, allow_private=False)
    check_url(url, allow_private=True)


@pytest.mark.parametrize("url", [f"https://{PUBLIC_IP}/hooks", "http://[2606:4700::1]:8443/"])
def test_check_url_accepts_public_addresses(url: str) -> None:
    check_url(url, allow_private=False)


def test_check_url_refuses_answer_mixing_public_and_private(fake_dns: FakeDns) -> None:
    fake_dns.answer("mixed.example", [PUBLIC_IP, "10.0.0.5"])
    with pytest.raises(ForbiddenTarget, match=r"10\.0\.0\.5"):
        check_url("https://mixed.example/", allow_private=False)


def test_check_url_refuses_unresolvable_host(fake_dns: FakeDns) -> None:
    fake_dns.answer("gone.example", [])
    with pytest.raises(ForbiddenTarget, match="does not resolve"):
        check_url("https://gone.example/", allow_private=False)


# --- Retry-After and backoff -----------------------------------------------------------------

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        (" 120 ", 120.0),
        ("Wed, 01 May 2024 12:01:30 GMT", 90.0),
        ("Wed, 01 May 2024 11:00:00 GMT", 0.0),
        (None, None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("inf", None),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, NOW) == seconds


def test_next_delay_full_jitter_within_exponential_ceiling() -> None:
    rng = random.Random(1234)
    for attempt in range(1, 20):
        ceiling = min(MAX_DELAY_S, 5.0 * 2 ** (attempt - 1))
        delays = [next_delay(attempt, None, rng) for _ in range(500)]
        assert all(0.0 <= delay <= ceiling for delay in delays)
        assert min(delays) < 0.1 * ceiling and max(delays) > 0.9 * ceiling  # full range used


def test_next_delay_is_capped_for_huge_attempt_numbers() -> None:
    assert next_delay(10**9, None, random.Random(1)) <= MAX_DELAY_S


def test_next_delay_honours_retry_after_within_bounds() -> None:
    rng = random.Random(1)
    assert next_delay(1, 7.0, rng) == 7.0
    assert next_delay(6, 7.0, rng) == 7.0
    assert next_delay(1, -3.0, rng) == 0.0
    assert next_delay(1, 10 * MAX_DELAY_S, rng) == MAX_DELAY_S


def test_next_delay_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError):
        next_delay(0, None, random.Random(1))
