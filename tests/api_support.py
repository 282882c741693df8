"""Helpers for the API tests: an app built for the current settings and a token."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from kernelwatch.api.main import create_app
from kernelwatch.core.db import session_scope
from kernelwatch.core.spec import cpu_decode_sweep
from kernelwatch.core.tokens import create_token


def make_client() -> TestClient:
    """A client on a fresh app (the settings of the running test: database, queue prefix)."""
    return TestClient(create_app())


def new_token(name: str = "tester") -> str:
    with session_scope() as session:
        return create_token(session, name)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def decode_spec(**overrides: Any) -> dict[str, Any]:
    """A small valid CPU sweep: 2 x 2 grid, two torch backends."""
    spec = cpu_decode_sweep(params={"kv_len": [128, 256]}, timing={"warmup": 1})
    spec.update(overrides)
    return spec


def add_node(name: str, tags: list[str], age_seconds: float = 0.0, **extra: Any) -> int:
    """Register a node as a worker would, with a heartbeat ``age_seconds`` old."""
    from datetime import timedelta

    from kernelwatch.core.models import Node, utcnow

    with session_scope() as session:
        node = Node(name=name, hostname=name.split(":")[0], tags=tags,
                    last_heartbeat=utcnow() - timedelta(seconds=age_seconds), **extra)
        session.add(node)
        session.flush()
        return node.id
