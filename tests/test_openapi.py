"""The OpenAPI document describes every answer: each route declares a 2xx response with a
schema, and the answers the API gives on a seeded database validate against the models the
routes declare (and lose nothing when written back through them)."""

from __future__ import annotations

from typing import Any

from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import TypeAdapter
from sqlalchemy import select
from sqlalchemy.orm import Session

from kernelwatch.api.main import create_app
from kernelwatch.api.routers import ROUTERS
from kernelwatch.core.models import Point, Regression
from kernelwatch.core.settings import Settings
from tests.api_support import auth, new_token
from tests.dashboard_seed import V_NEW, V_OLD, seed


def test_every_route_declares_a_2xx_schema(kw_env: Settings) -> None:
    spec = create_app().openapi()
    seen = 0
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            ok = {code: r for code, r in op["responses"].items() if code.startswith("2")}
            assert ok, f"{method.upper()} {path}: no 2xx response"
            for code, r in ok.items():
                content = r.get("content") or {}
                assert content, f"{method.upper()} {path} {code}: no content"
                for media, body in content.items():
                    assert body.get("schema"), f"{method.upper()} {path} {code} {media}: {{}}"
            seen += 1
    assert seen >= 16


def _model(method: str, path: str) -> Any:
    for route in (r for router in ROUTERS for r in router.routes):
        if isinstance(route, APIRoute) and route.path == path and method in route.methods:
            assert route.response_model is not None, f"{method} {path}"
            return route.response_model
    raise AssertionError(f"no route {method} {path}")


def test_answers_validate_against_the_declared_models(session: Session) -> None:
    seeded = seed(session)
    series_key = session.scalars(select(Point.series_key).where(
        Point.job_id == seeded.decode_job)).first()
    regression_id = session.scalars(select(Regression.id)).first()
    client = TestClient(create_app())
    headers = auth(new_token())
    b, c = seeded.runs[V_OLD], seeded.runs[V_NEW]
    calls = [
        ("GET", "/healthz", "/healthz"),
        ("GET", "/v1/nodes", "/v1/nodes"),
        ("GET", "/v1/jobs", "/v1/jobs"),
        ("GET", "/v1/jobs/{job_id}", f"/v1/jobs/{seeded.decode_job}"),
        ("GET", "/v1/jobs/{job_id}/results", f"/v1/jobs/{seeded.decode_job}/results"),
        ("GET", "/v1/compare", f"/v1/compare?baseline={b}&contender={c}"),
        ("GET", "/v1/series/{series_key}/history", f"/v1/series/{series_key}/history"),
        ("GET", "/v1/releases", "/v1/releases"),
        ("GET", "/v1/releases/{version}", f"/v1/releases/{V_NEW}"),
        ("GET", "/v1/regressions", "/v1/regressions"),
        ("POST", "/v1/regressions/{regression_id}/ack", f"/v1/regressions/{regression_id}/ack"),
    ]
    for method, route_path, url in calls:
        r = client.request(method, url, headers=headers)
        assert r.status_code == 200, (url, r.text)
        adapter = TypeAdapter(_model(method, route_path))
        answer = r.json()
        assert answer, url
        value = adapter.validate_python(answer)
        assert adapter.dump_python(value, mode="json") == answer, url
    release = client.get(f"/v1/releases/{V_NEW}").json()
    assert release["tags"] and release["comparisons"][0]["regressions"]
