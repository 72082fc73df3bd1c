"""Where a URL points, without what it carries: incoming-webhook URLs (Slack, PagerDuty,
generic receivers) embed their secret token in the path or query, some credentials before
the host, so wherever such a URL is shown to someone other than the admin who set it, or
written down for good (the audit log, server logs), only its scheme and host remain."""

from __future__ import annotations

from urllib.parse import urlsplit

URL_MASK = "[redacted]"


def redacted_url(url: str) -> str:
    """Scheme and host, then a fixed mask (the port, path, query and user info are dropped);
    the mask alone when the URL has no scheme or host. Idempotent: a redacted URL redacts to
    itself."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return URL_MASK
    if not parts.scheme or not host:
        return URL_MASK
    if ":" in host:  # IPv6
        host = f"[{host}]"
    return f"{parts.scheme}://{host}/{URL_MASK}"
