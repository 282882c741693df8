"""Every router the API serves. main.py includes each of ``ROUTERS`` in order; an area adds
its router by importing it here and appending it to the list."""

from __future__ import annotations

from fastapi import APIRouter

from api.routers import health, jobs, nodes

ROUTERS: list[APIRouter] = [
    health.router,
    jobs.router,
    nodes.router,
]
