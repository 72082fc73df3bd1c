"""Signed webhook delivery: secrets, signing, envelopes, target policy, one HTTP attempt, backoff.

Everything here is pure or does exactly one HTTP attempt; persistence and scheduling (the
outbox) live elsewhere and build on ``send`` + ``next_delay`` + ``MAX_ATTEMPTS``.

Target policy (SSRF guard). ``check_url`` validates a URL when it is configured, but a DNS
answer can change between that check and the delivery (DNS rebinding). So ``send`` never lets
httpx resolve names itself: ``GuardedTransport`` installs ``_GuardedBackend`` as the httpcore
network backend, which resolves the host once per connection, applies the same address policy to
every answer, and then opens the TCP socket to the validated IP literal. httpcore still uses the
original hostname for TLS (SNI and certificate verification), and httpx sets the Host header from
the URL, so only the socket address changes.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import math
import random
import secrets
import socket
import ssl
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpcore
import httpx
from standardwebhooks import Webhook

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

USER_AGENT = "Plumbline-Webhooks/1"
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
RESPONSE_EXCERPT_BYTES = 1024

BASE_DELAY_S = 5.0
MAX_DELAY_S = 3600.0
# With full jitter the delay ceilings are 5 s, 10 s, ... 2560 s, 3600 s: eleven retries span at
# most ~2.4 h (about 1.2 h on average) before the twelfth failure dead-letters the delivery.
MAX_ATTEMPTS = 12

# Reached through the link-local, CGNAT or ULA ranges, so they are named explicitly to stay
# forbidden even when private targets are allowed.
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",  # AWS, GCP, Azure, Oracle, DigitalOcean, OpenStack
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS IPv6 IMDS
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure WireServer (a public-range address)
    )
)
_METADATA_HOSTNAMES = frozenset({"metadata.google.internal"})
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")  # Linux routes 0.x.y.z to the local host
_NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")
_ALLOWED_SCHEMES = frozenset({"http", "https"})


class ForbiddenTarget(ValueError):
    """The URL or the address it resolves to is not an acceptable webhook destination."""


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    """Outcome of one POST, shaped for the outbox to store and to decide on a retry."""

    ok: bool
    status_code: int | None
    response_excerpt: str
    duration_ms: int
    error: str | None
    retry_after_s: float | None
    retryable: bool


def new_webhook_secret() -> str:
    """Standard Webhooks secret, so receivers can verify with any standardwebhooks library."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def sign(
    secret: str,
    msg_id: str,
    timestamp: datetime,
    body: bytes,
    *,
    previous_secret: str | None = None,
) -> dict[str, str]:
    """Request headers carrying a Standard Webhooks v1 signature over id, timestamp and body.

    ``timestamp`` is the send time, not the event time: receivers reject signatures older than
    about five minutes, so sign afresh on every attempt (the body and msg_id stay the same).
    With ``previous_secret`` (a rotation's grace period) the header lists a second signature,
    space-separated as the spec allows (``v1,<new> v1,<previous>``): a receiver still holding
    the previous secret verifies, and so does one already switched to the new one.
    """
    utc_timestamp = _as_utc(timestamp)
    # standardwebhooks *replaces* tzinfo with UTC rather than converting, hence the UTC value.
    signatures = [
        Webhook(signer).sign(msg_id, utc_timestamp, body.decode("utf-8"))
        for signer in (secret, previous_secret)
        if signer is not None
    ]
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(math.floor(utc_timestamp.timestamp())),
        "webhook-signature": " ".join(signatures),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def envelope(
    event_type: str,
    data: dict[str, Any],
    timestamp: datetime,
    *,
    subject: str | None,
    sequence: int,
) -> bytes:
    """Compact JSON body; these exact bytes are what gets signed, so they are built once.

    ``subject`` ("alert:12") names what the event is about and ``sequence`` grows with every
    event queued for the endpoint, so a receiver keeps, per subject, the event with the
    highest sequence and drops an older one that arrives late (a redelivery). Null subject:
    a test message, about nothing.
    """
    iso_utc = _as_utc(timestamp).isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"
    document = {
        "type": event_type,
        "timestamp": iso_utc,
        "subject": subject,
        "sequence": sequence,
        "data": data,
    }
    return json.dumps(document, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _as_utc(timestamp: datetime) -> datetime:
    """Refuse naive datetimes: guessing their zone would silently shift signed timestamps."""
    if timestamp.utcoffset() is None:
        raise ValueError("timestamp must be timezone-aware")
    return timestamp.astimezone(UTC)


def check_url(url: str, allow_private: bool) -> None:
    """Validate a webhook URL at configuration time; ``send`` re-applies the policy on connect."""
    parsed = _checked_shape(url)
    try:
        _resolve_allowed(parsed.raw_host.decode("ascii"), _port_of(parsed), allow_private)
    except socket.gaierror as exc:
        raise ForbiddenTarget(f"host {parsed.host!r} does not resolve: {exc}") from exc


def _checked_shape(url: str) -> httpx.URL:
    """Checks that need no DNS, parsed by httpx so the checked URL is the URL that is sent."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ForbiddenTarget(f"invalid URL: {exc}") from exc
    if parsed.scheme not in _ALLOWED_SCHEMES:
        raise ForbiddenTarget(f"scheme {parsed.scheme!r} is not allowed; use http or https")
    if parsed.userinfo:
        raise ForbiddenTarget("credentials in the URL are not allowed")
    if not parsed.host:
        raise ForbiddenTarget("URL has no host")
    if parsed.host.rstrip(".").lower() in _METADATA_HOSTNAMES:
        raise ForbiddenTarget(f"host {parsed.host!r} is a cloud metadata endpoint")
    return parsed


def _port_of(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def _resolve_allowed(host: str, port: int, allow_private: bool) -> list[str]:
    """All addresses for ``host``, or ForbiddenTarget if any of them is off-limits.

    Rejecting the whole answer (not just skipping bad records) stops a hostile DNS server from
    mixing one public decoy with an internal address.
    """
    answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    addresses = list(dict.fromkeys(str(sockaddr[0]) for *_, sockaddr in answers))
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, f"no addresses for {host}")
    for address in addresses:
        reason = _forbidden_reason(ipaddress.ip_address(address), allow_private)
        if reason is not None:
            raise ForbiddenTarget(f"{host} resolves to {address}, a {reason}")
    return addresses


def _forbidden_reason(address: IPAddress, allow_private: bool) -> str | None:
    """Why ``address`` may not be contacted, or None when it may."""
    effective = _embedded_ipv4(address) or address
    reason = _never_allowed_reason(effective)
    if reason is not None:
        return reason
    if effective.is_loopback or not effective.is_global:
        return None if allow_private else "loopback or private address (needs allow_private)"
    return None


def _never_allowed_reason(address: IPAddress) -> str | None:
    """Addresses that are never a legitimate webhook receiver, whatever the deployment."""
    if address in _METADATA_ADDRESSES:
        return "cloud metadata address"
    if address.is_link_local:
        return "link-local address"
    if address.is_unspecified or address in _THIS_NETWORK:
        return "unspecified address"
    if address.is_multicast:
        return "multicast address"
    if address.is_reserved and not address.is_loopback:  # ::1 sits inside reserved ::/8
        return "reserved address"
    return None


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 host an IPv6 address really reaches (mapped, 6to4, NAT64), so it is judged."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64_PREFIX:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


class _GuardedBackend(httpcore.SyncBackend):
    """Resolves and validates at connect time, then connects to the validated IP literal."""

    def __init__(self, allow_private: bool) -> None:
        self._allow_private = allow_private

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[tuple[Any, ...]] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = _resolve_allowed(host, port, self._allow_private)
        except socket.gaierror as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        last_error: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in addresses:  # like socket.create_connection: first reachable one wins
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        assert last_error is not None  # _resolve_allowed never returns an empty list
        raise last_error


class GuardedTransport(httpx.HTTPTransport):
    """httpx transport whose every TCP connection obeys the target policy (see module doc)."""

    def __init__(self, allow_private: bool, verify: ssl.SSLContext | bool = True) -> None:
        super().__init__(verify=verify)
        # httpx 0.28 has no public hook for a network backend, so swap the pool it built. Reading
        # ``_pool`` first fails loudly, instead of bypassing the guard, if httpx renames it.
        if not isinstance(self._pool, httpcore.ConnectionPool):
            raise RuntimeError("unexpected httpx transport internals; refusing to send unguarded")
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify),
            network_backend=_GuardedBackend(allow_private),
        )


def send(
    url: str, headers: Mapping[str, str], body: bytes, timeout_s: float, allow_private: bool
) -> DeliveryAttempt:
    """POST once and classify the outcome; never raises for receiver or network failures.

    Synchronous on purpose: the outbox worker runs off the request path in its own thread, and
    the sync stack keeps the connect-time guard to one small backend around blocking sockets.
    """
    started = time.monotonic()
    try:
        response, excerpt = _post(url, headers, body, timeout_s, allow_private)
    except ForbiddenTarget as exc:
        return _failed_attempt(f"forbidden target: {exc}", False, started)
    except httpx.TimeoutException:
        return _failed_attempt("timeout", True, started)
    except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
        return _failed_attempt(f"connection error: {exc}", True, started)
    return _response_attempt(response, excerpt, started)


def _post(
    url: str, headers: Mapping[str, str], body: bytes, timeout_s: float, allow_private: bool
) -> tuple[httpx.Response, str]:
    """One POST without redirects, env proxies or netrc, reading only the body excerpt."""
    _checked_shape(url)
    request_headers = httpx.Headers(headers)
    request_headers["accept-encoding"] = "identity"  # a readable excerpt, no decompression
    with (
        httpx.Client(
            transport=GuardedTransport(allow_private),
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
            trust_env=False,
        ) as client,
        client.stream("POST", url, headers=request_headers, content=body) as response,
    ):
        return response, _read_excerpt(response)


def _read_excerpt(response: httpx.Response) -> str:
    """At most RESPONSE_EXCERPT_BYTES, so a huge or endless body costs neither memory nor time."""
    collected = bytearray()
    for chunk in response.iter_raw():
        collected += chunk
        if len(collected) >= RESPONSE_EXCERPT_BYTES:
            break
    return collected[:RESPONSE_EXCERPT_BYTES].decode("utf-8", errors="replace")


def _response_attempt(response: httpx.Response, excerpt: str, started: float) -> DeliveryAttempt:
    status = response.status_code
    error = None
    if 300 <= status < 400:
        location = response.headers.get("location", "no location")
        error = f"redirect not followed ({status} to {location})"
    return DeliveryAttempt(
        ok=200 <= status < 300,
        status_code=status,
        response_excerpt=excerpt,
        duration_ms=_elapsed_ms(started),
        error=error,
        retry_after_s=parse_retry_after(response.headers.get("retry-after"), datetime.now(UTC)),
        retryable=status in (408, 429) or status >= 500,
    )


def _failed_attempt(error: str, retryable: bool, started: float) -> DeliveryAttempt:
    return DeliveryAttempt(
        ok=False,
        status_code=None,
        response_excerpt="",
        duration_ms=_elapsed_ms(started),
        error=error,
        retry_after_s=None,
        retryable=retryable,
    )


def _elapsed_ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or HTTP-date), never negative."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        retry_at = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if retry_at.tzinfo is None:  # "-0000" dates parse naive; HTTP-dates are always GMT
        retry_at = retry_at.replace(tzinfo=UTC)
    return max(0.0, (retry_at - now).total_seconds())


def next_delay(attempt: int, retry_after_s: float | None, rng: random.Random) -> float:
    """Seconds before retrying after failed attempt number ``attempt`` (1-based).

    Full jitter spreads retries from many deliveries instead of synchronising them against a
    recovering receiver; an explicit Retry-After wins but is still capped, so a receiver cannot
    park a delivery for days.
    """
    if attempt < 1:
        raise ValueError("attempt numbers start at 1")
    if retry_after_s is not None:
        return min(max(retry_after_s, 0.0), MAX_DELAY_S)
    doublings = min(attempt - 1, 32)  # beyond this the cap always wins; avoids huge powers
    return rng.uniform(0.0, min(MAX_DELAY_S, BASE_DELAY_S * 2**doublings))
