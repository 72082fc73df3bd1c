"""The application factory: API routers, dashboard pages, static files, background work.

The composition root: the one module that knows every noun. Nothing imports it but the CLI
and the tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from app.canaries import pages as canary_pages
from app.canaries import router as canary_api
from app.core import health
from app.core.db import make_engine, make_sessionmaker
from app.core.errors import install_handlers
from app.core.heap import settle_heap
from app.core.jobs import BackgroundWorkers
from app.core.observability import (
    BodySizeLimitMiddleware,
    RequestContextMiddleware,
    configure_logging,
)
from app.core.resources import resource_dir
from app.core.settings import Settings
from app.datasets import pages as dataset_pages
from app.datasets import router as dataset_api
from app.drift import pages as drift_pages
from app.drift import router as drift_api
from app.evaluations import pages as run_pages
from app.evaluations import router as run_api
from app.gates import pages as gate_pages
from app.gates import router as gate_api
from app.ingest import otlp_router as otlp_api
from app.ingest import pages as trace_pages
from app.ingest import router as event_api
from app.keys import router as key_api
from app.overview import pages as overview_pages
from app.registry import pages as registry_pages
from app.registry import router as registry_api
from app.schedule import registered_loops, start_scheduler
from app.web import login
from app.webhooks import pages as webhook_pages
from app.webhooks import router as webhook_api

API_ROUTERS = (
    health,
    key_api,
    registry_api,
    gate_api,
    event_api,
    otlp_api,
    dataset_api,
    run_api,
    drift_api,
    webhook_api,
    canary_api,
)
PAGE_ROUTERS = (
    login,
    overview_pages,
    registry_pages,
    run_pages,
    gate_pages,
    drift_pages,
    trace_pages,
    dataset_pages,
    webhook_pages,
    canary_pages,
)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
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
        settle_heap()
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
    for module in (*API_ROUTERS, *PAGE_ROUTERS):
        app.include_router(module.router)
    # CSS, app.js and the locally served plotly.min.js: never a CDN.
    app.mount("/static", StaticFiles(directory=resource_dir("static")), name="static")
    return app
