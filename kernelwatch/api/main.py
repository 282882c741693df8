"""The FastAPI application: ``uvicorn api.main:app`` (``kernelwatch api`` runs it)."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from kernelwatch.api import errors
from kernelwatch.api.middleware import BodyLimitMiddleware, Metrics, MetricsMiddleware
from kernelwatch.api.routers import ROUTERS
from kernelwatch.api.routers.health import DatabaseCollector
from kernelwatch.core.settings import get_settings

DESCRIPTION = """Benchmarks FlashInfer's GPU kernels as a service (every kernel: `/v1/catalogue`).

Submit a sweep spec to `POST /v1/jobs` (bearer token), follow it at `GET /v1/jobs/{id}`, read
its points at `GET /v1/jobs/{id}/results`. Validation errors are HTTP 422 whose `msg` names the
field and the allowed values."""


def create_app() -> FastAPI:
    settings = get_settings()
    app = FastAPI(title="kernelwatch", version="0.1.0", description=DESCRIPTION)
    # A registry per app: tests create many apps in one process, and prometheus_client refuses
    # to register the same metric name twice in one registry.
    registry = CollectorRegistry()
    registry.register(DatabaseCollector())
    app.state.metrics_registry = registry
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    # Added last = outermost: the body limit applies before anything reads the body, and the
    # metrics see every response, 413s included.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=Metrics(registry))
    logging.getLogger("kernelwatch").setLevel(logging.INFO)
    return app


app = create_app()
