"""The server-rendered dashboard: HTML pages, their figures, and the static files they use."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from app.web.rendering import WEB_ROOT


def install(app: FastAPI) -> None:
    """Adds the pages and mounts /static (CSS, app.js and the locally served plotly.min.js)."""
    from app.web import views

    app.include_router(views.router)
    app.mount("/static", StaticFiles(directory=WEB_ROOT / "static"), name="static")
