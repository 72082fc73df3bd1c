"""Absolute links to dashboard pages, for webhook payloads and API bodies.

Built from PLUMBLINE_PUBLIC_URL (the address people reach the dashboard at, which the service
cannot guess behind a proxy). Passed to the services that write links, never read from a
global, so two apps with different settings in one process never mix their links."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlencode

from app.core.settings import Settings


@dataclass(frozen=True)
class Links:
    base: str

    @classmethod
    def of(cls, settings: Settings) -> Links:
        return cls(settings.public_url.rstrip("/"))

    def page(self, *parts: str | int, **query: str | int) -> str:
        """`/part/part?query` under the public URL; every part is escaped as one segment."""
        path = "/".join(quote(str(part), safe="") for part in parts)
        suffix = f"?{urlencode(query)}" if query else ""
        return f"{self.base}/{path}{suffix}"
