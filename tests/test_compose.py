"""docker-compose.yml is valid for Compose and declares what a deployment needs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _compose() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


COMPOSE = _compose()
needs_compose = pytest.mark.skipif(COMPOSE is None, reason="no docker compose binary here")


@needs_compose
def test_compose_config_is_valid() -> None:
    assert COMPOSE is not None
    r = subprocess.run([*COMPOSE, "config", "-q"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@needs_compose
def test_compose_resolved_services() -> None:
    assert COMPOSE is not None
    r = subprocess.run([*COMPOSE, "config"], cwd=ROOT, capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "KERNELWATCH_WORKER_TAGS": "nightly,lab"})
    assert r.returncode == 0, r.stderr
    services = yaml.safe_load(r.stdout)["services"]
    assert {"postgres", "redis", "migrate", "api", "dashboard", "worker-gpu"} <= set(services)
    worker = services["worker-gpu"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert worker["environment"]["KERNELWATCH_WORKER_TAGS"] == "nightly,lab"
    assert worker["environment"]["KERNELWATCH_BROKER_URL"].startswith("redis://")
    # Migrations run once, before anything that touches the database.
    for name in ("api", "dashboard", "worker-gpu"):
        dep = services[name]["depends_on"]["migrate"]
        assert dep["condition"] == "service_completed_successfully"
    assert services["migrate"]["command"] == ["kernelwatch", "db", "upgrade"]
