"""Every router the API serves. main.py includes each of ``ROUTERS`` in order; an area adds
its router by importing it here and appending it to the list."""

from __future__ import annotations

from fastapi import APIRouter

from kernelwatch.api.routers import (
    catalogue,
    compare,
    health,
    jobs,
    nodes,
    regressions,
    releases,
    webhooks,
)

ROUTERS: list[APIRouter] = [
    health.router,
    jobs.router,
    nodes.router,
    catalogue.router,
    compare.router,
    releases.router,
    regressions.router,
    webhooks.router,
]
