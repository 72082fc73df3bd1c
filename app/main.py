"""The application factory: routers, static files, templates, background work."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from app import settings as settings_module
from app.api import datasets, drift, events, gates, health, keys, otlp, registry, runs, webhooks
from app.db import make_engine, make_sessionmaker
from app.errors import install_handlers
from app.jobs import BackgroundWorkers, registered_loops
from app.observability import BodySizeLimitMiddleware, RequestContextMiddleware, configure_logging
from app.services.scheduler import start_scheduler
from app.settings import Settings
from app.web import install as install_dashboard

ROOT = Path(__file__).resolve().parent.parent


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    settings_module.configure(settings)
    configure_logging(settings.log_level, settings.log_json)
    engine = make_engine(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        workers = BackgroundWorkers(app.state.sessionmaker, settings)
        if settings.run_workers:
            workers.start(registered_loops())
        scheduler = (
            start_scheduler(app.state.sessionmaker, settings) if settings.run_scheduler else None
        )
        yield
        if scheduler is not None:
            scheduler.shutdown(wait=False)
        workers.stop()
        engine.dispose()

    app = FastAPI(
        title="Plumbline",
        version="1.0.0",
        description="Guards fine-tuned model checkpoints between training and production.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)
    install_handlers(app)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware)
    for module in (health, keys, registry, gates, events, otlp, datasets, runs, drift, webhooks):
        app.include_router(module.router)
    install_dashboard(app)
    return app
