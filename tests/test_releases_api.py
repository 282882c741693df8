"""The release flow's pieces and the read/ack API: suite per tag, fleet tags, previous
version, POST/GET /v1/releases, GET /v1/regressions, POST /v1/regressions/{id}/ack,
GET /v1/series/{key}/history, and the hook's progress without a worker."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from kernelwatch.api.main import create_app
from kernelwatch.core import models
from kernelwatch.core.compare import compare_runs, persist_comparison
from kernelwatch.core.fixtures import import_job
from kernelwatch.core.hooks import on_job_finished
from kernelwatch.core.models import Node, Release, ReleaseTag, TagState, utcnow
from kernelwatch.core.releases import (
    load_suite,
    parse_version_tag,
    previous_release_version,
    release_tags,
    start_release,
    suite_specs,
)
from kernelwatch.core.settings import Settings
from kernelwatch.core.tokens import create_token
from kernelwatch_harness import catalogue
from kernelwatch_harness.catalogue import FAMILIES, KERNELS

CPU = json.loads((Path(__file__).parent / "fixtures/compare/cpu_same_spec_two_runs.json")
                 .read_text())


def test_version_tags() -> None:
    assert parse_version_tag("v0.6.18") == "0.6.18"
    assert parse_version_tag("0.6.18.post1") == "0.6.18.post1"
    assert parse_version_tag("v0.7.0rc2") == "0.7.0rc2"
    for branch in ("main", "release/0.6", "v0.6.18-hotfix", ""):
        assert parse_version_tag(branch) is None


def test_suite_per_tag_keeps_torch_backends_on_cpu() -> None:
    suite = load_suite()
    gpu = suite_specs("h100", ["0.5.3", "0.6.18.post1"], suite)
    cpu = suite_specs("cpu", ["0.5.3", "0.6.18.post1"], suite)
    assert [s.kernel for s in gpu] == [e["kernel"] for e in suite]
    assert any(b in ("fa2", "fa3") for s in gpu for b in s.backends)
    # every family with a kernel kernelwatch measures: a declared-only family (every kernel
    # refused with its reason: quantization, sparse_attention, comm) would only add refusals
    measured = {k.family for k in KERNELS.values() if not k.declared}
    assert {KERNELS[s.kernel].family for s in gpu} == measured
    assert measured < set(FAMILIES) and "comm" not in measured
    for s in cpu:
        assert set(s.backends) <= set(KERNELS[s.kernel].torch_backends)
        assert s.targets == ["cpu"]
        assert s.versions() == ["0.5.3", "0.6.18.post1"]  # labels carried through
        # cpu_params: small shapes
        assert catalogue.memory_bytes(s.kernel, s.grid(s.backends[0])[0]) < 64 << 20


def test_fleet_tags_and_previous_version(session: Session) -> None:
    now = utcnow()
    session.add_all([
        Node(name="a:gpu0", hostname="a", gpu_index=0, gpu_sku="h100", tags=["hopper", "h100"],
             last_heartbeat=now),
        Node(name="b:cpu", hostname="b", tags=["cpu"], last_heartbeat=now - timedelta(hours=5)),
        Node(name="c:gpu0", hostname="c", gpu_index=0, gpu_sku="a100", tags=["ampere", "a100"],
             last_heartbeat=now - timedelta(days=30)),  # long gone
        Release(version="0.5.3", source="manual", details={}),
        Release(version="0.6.2", source="manual", details={}),
        Release(version="0.10.0", source="manual", details={}),
    ])
    session.commit()
    assert release_tags(session) == ["cpu", "h100"]
    assert previous_release_version(session, "0.6.18.post1") == "0.6.2"
    assert previous_release_version(session, "0.11.0") == "0.10.0"
    assert previous_release_version(session, "0.5.0") is None


@pytest.fixture
def client(kw_env: Settings) -> Any:
    with TestClient(create_app()) as c:
        yield c


@pytest.fixture
def auth(session: Session) -> dict[str, str]:
    token = create_token(session, "tester")
    session.commit()
    return {"Authorization": f"Bearer {token}"}


def test_post_and_get_releases(client: TestClient, session: Session,
                               auth: dict[str, str]) -> None:
    session.add(Node(name="h:cpu", hostname="h", tags=["cpu"], last_heartbeat=utcnow()))
    session.commit()
    assert client.post("/v1/releases", json={"version": "0.6.18"}).status_code == 401
    r = client.post("/v1/releases", json={"version": "0.6.18.post1", "previous": "0.5.3"},
                    headers=auth)
    assert r.status_code == 201, r.text
    assert r.json()["previous_version"] == "0.5.3" and r.json()["jobs"]
    again = client.post("/v1/releases", json={"version": "0.6.18.post1"}, headers=auth)
    assert again.status_code == 200 and again.json()["created"] is False
    bad = client.post("/v1/releases", json={"version": "latest"}, headers=auth)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "version"]
    older = client.post("/v1/releases", json={"version": "0.4.0", "previous": "0.5.0"},
                        headers=auth)
    assert older.status_code == 422 and older.json()["detail"][0]["loc"] == ["body", "previous"]
    client.post("/v1/releases", json={"version": "0.10.0"}, headers=auth)
    listed = client.get("/v1/releases").json()
    assert [x["version"] for x in listed] == ["0.10.0", "0.6.18.post1"]
    # FlashInfer's previous release by the package index, not the newest one recorded here.
    assert listed[0]["previous_version"] == "0.7.4"
    one = client.get("/v1/releases/0.6.18.post1").json()
    assert {r["flashinfer_version"] for r in one["runs"]} == {"0.5.3", "0.6.18.post1"}
    assert one["comparisons"] == [] and one["tags"]["cpu"]["state"] == "benchmarking"
    assert client.get("/v1/releases/9.9.9").status_code == 404


def _release_with_finished_jobs(session: Session, planted: float) -> Release:
    """A release whose cpu jobs 'ran': the recorded runs relabelled as the two versions."""
    base = copy.deepcopy(CPU["baseline"])
    cont = copy.deepcopy(CPU["baseline"])
    p = next(p for p in cont["runs"][0]["points"] if p["status"] == "ok")
    p["samples"]["latency_us"] = [v * planted for v in p["samples"]["latency_us"]]
    job_ids = []
    for data, version in ((base, "0.5.3"), (cont, "0.6.18.post1")):
        data["job"].update(kind="release", release_version="0.6.18.post1", status="succeeded")
        for r in data["runs"]:
            r["flashinfer_version"] = version
        job_ids.append(import_job(session, data).id)
    release = Release(version="0.6.18.post1", previous_version="0.5.3", source="manual",
                      status=models.ReleaseStatus.benchmarking, details={},
                      tags=[ReleaseTag(tag="cpu", job_ids=job_ids,
                                       state=TagState.benchmarking)])
    session.add(release)
    session.commit()
    return release


def test_hook_compares_and_finishes_a_release_without_regressions(session: Session) -> None:
    release = _release_with_finished_jobs(session, planted=1.0)
    job_id = session.scalars(select(ReleaseTag.job_ids)).one()[0]
    on_job_finished(job_id)
    on_job_finished(job_id)  # a repeated hook changes nothing
    session.expire_all()
    release = session.scalars(select(Release)).one()
    (tag,) = session.scalars(select(ReleaseTag).where(ReleaseTag.release_id == release.id))
    assert tag.state == TagState.done and tag.regressions == 0
    assert release.status == "complete" and release.notified_at is not None
    note = release.details["notification"]
    assert note["sent"] is False  # no KERNELWATCH_NOTIFY_URL
    assert note["payload"]["summary"]["gpus"][0]["comparison_id"] == tag.comparison_id


def test_regressions_list_and_ack(client: TestClient, session: Session,
                                  auth: dict[str, str]) -> None:
    data = copy.deepcopy(CPU["baseline"])
    p = next(p for p in data["runs"][0]["points"] if p["status"] == "ok")
    p["samples"]["latency_us"] = [v * 2 for v in p["samples"]["latency_us"]]
    b, c = import_job(session, CPU["baseline"]), import_job(session, data)
    session.flush()
    run = models.Run
    runs = [list(session.scalars(select(run.id).where(run.job_id == j.id))) for j in (b, c)]
    persist_comparison(session, compare_runs(session, runs[0], runs[1]))
    session.commit()
    listed = client.get("/v1/regressions", params={"state": "open"}).json()
    assert len(listed) == 1 and listed[0]["ratio"] == pytest.approx(2.0)
    assert client.get("/v1/regressions", params={"state": "confirmed"}).json() == []
    bad = client.get("/v1/regressions", params={"state": "bogus"})
    assert bad.status_code == 422 and "confirmed" in bad.json()["detail"][0]["msg"]
    rid = listed[0]["id"]
    assert client.post(f"/v1/regressions/{rid}/ack").status_code == 401
    acked = client.post(f"/v1/regressions/{rid}/ack", headers=auth).json()
    assert acked["acknowledged"] is True and acked["acknowledged_by"] == "tester"
    assert client.post("/v1/regressions/999999/ack", headers=auth).status_code == 404

    key = listed[0]["series_key"]
    hist = client.get(f"/v1/series/{key}/history")
    assert hist.status_code == 200 and hist.json()["kernel"] == "batch_decode"
    assert client.get("/v1/series/nope/history").status_code == 404
    assert client.get(f"/v1/series/{key}/history", params={"threshold": -1}).status_code == 422


def test_start_release_without_nodes_says_so(session: Session) -> None:
    start = start_release(session, "0.6.18")
    assert start.created and start.release.status == "no_nodes" and not start.runs
    assert session.scalars(select(models.Job)).all() == []


def test_cli_release_triggers_the_flow(kw_env: Settings, session: Session) -> None:
    from click.testing import CliRunner

    from kernelwatch.cli.main import cli

    session.add(Node(name="h:cpu", hostname="h", tags=["cpu"], last_heartbeat=utcnow()))
    session.commit()
    out = CliRunner().invoke(cli, ["release", "0.6.18.post1", "--previous", "0.5.3"])
    assert out.exit_code == 0, out.output
    body = json.loads(out.stdout)
    assert body["created"] is True and body["previous_version"] == "0.5.3" and body["jobs"]
    again = CliRunner().invoke(cli, ["release", "0.6.18.post1"])
    assert again.exit_code == 0 and json.loads(again.stdout)["created"] is False
    bad = CliRunner().invoke(cli, ["release", "not-a-version"])
    assert bad.exit_code != 0 and "version" in bad.output
