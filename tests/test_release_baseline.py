"""The release webhook from day one: a fresh database chooses FlashInfer's previous release
as the baseline (from the recorded package-index listing, served locally) and measures both
versions in the same jobs; an operator's override re-runs the release or is refused with the
reason; the release's answer carries its baseline, status URL, verdict and notification
outcome; ``kernelwatch release status`` shows it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kernelwatch.api.main import create_app
from kernelwatch.cli.main import cli
from kernelwatch.core.hooks import on_job_finished
from kernelwatch.core.models import Job, JobStatus, Node, Release, ReleaseTag
from kernelwatch.core.notify import local_receiver
from kernelwatch.core.releases import start_release
from kernelwatch.core.settings import Settings
from tests.api_support import auth, new_token
from tests.conftest import configure
from tests.test_releases_api import _release_with_finished_jobs
from tests.test_webhook import SECRET, post

PAYLOAD = {"action": "published", "release": {"tag_name": "v0.7.4", "prerelease": False},
           "repository": {"full_name": "flashinfer-ai/flashinfer"},
           "sender": {"login": "release-bot"}}


@pytest.fixture
def client(kw_env: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    configure(monkeypatch, webhook_secret=SECRET, api_url="http://kw.example:8000")
    with TestClient(create_app()) as c:
        yield c


def _versions_measured(session: Session, version: str) -> set[tuple[str, ...]]:
    return {tuple(j.spec["flashinfer_versions"]) for j in session.scalars(
        select(Job).where(Job.release_version == version, Job.status != JobStatus.cancelled))}


def test_a_fresh_service_compares_a_webhook_release_with_flashinfers_previous_one(
        client: TestClient, session: Session, cpu_node: Node) -> None:
    assert session.scalar(select(func.count(Release.id))) == 0  # nothing recorded before
    r = post(client, PAYLOAD)
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["previous_version"] == "0.7.2.post1"
    assert out["baseline"]["source"].startswith("FlashInfer's previous release (index http://")
    assert out["baseline"]["measured"] == "in this release's jobs, on the same nodes"
    # Where to follow it: in the answer and as the Location header.
    assert out["status_url"] == "http://kw.example:8000/v1/releases/0.7.4"
    assert r.headers["location"] == out["status_url"]
    assert out["verdict"] == "pending" and out["notification"] is None
    # Both versions are measured, in the same jobs.
    assert _versions_measured(session, "0.7.4") == {("0.7.2.post1", "0.7.4")}


@pytest.mark.parametrize(("version", "baseline"), [
    ("0.7.2.post1", "0.7.2"),  # a post-release compares with the release it follows
    ("0.8.0rc1", "0.7.4"),  # a pre-release: the latest release before it
    ("0.6.0", "0.5.3"),
])
def test_post_releases_and_pre_releases_get_their_pep_440_baseline(
        kw_env: Settings, session: Session, cpu_node: Node, version: str, baseline: str) -> None:
    start = start_release(session, version)
    assert start.created and start.release.previous_version == baseline
    session.commit()
    assert _versions_measured(session, version) == {(baseline, version)}


def test_without_an_index_the_recorded_releases_are_the_fallback_and_it_is_said(
        kw_env: Settings, session: Session, cpu_node: Node,
        monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, package_index_url="http://127.0.0.1:9/simple")
    session.add(Release(version="0.6.18.post1", source="manual", status="complete", details={}))
    session.commit()
    start = start_release(session, "0.7.4")
    assert start.release.previous_version == "0.6.18.post1"
    source = start.release.details["baseline"]["source"]
    assert source.startswith("recorded releases (package index http://127.0.0.1:9/simple")


def test_an_operators_baseline_is_applied_by_re_running_or_refused_with_the_reason(
        client: TestClient, session: Session, cpu_node: Node) -> None:
    headers = auth(new_token())
    first = client.post("/v1/releases", json={"version": "0.7.4"}, headers=headers).json()
    assert first["previous_version"] == "0.7.2.post1"
    old_jobs = {j["id"] for j in first["jobs"]}
    # Another baseline on the recorded release: its unfinished jobs are cancelled and it is
    # measured again against that one.
    r = client.post("/v1/releases", json={"version": "0.7.4", "previous": "0.6.18.post1"},
                    headers=headers)
    assert r.status_code == 200, r.text
    again = r.json()
    assert again["created"] is False and again["previous_version"] == "0.6.18.post1"
    assert again["baseline"] == {
        "version": "0.6.18.post1", "source": "named by the operator",
        "measured": "in this release's jobs, on the same nodes",
        "changed_from": "0.7.2.post1", "cancelled_jobs": len(old_jobs)}
    session.expire_all()
    assert {j.status for j in session.scalars(select(Job).where(Job.id.in_(old_jobs)))} == {
        JobStatus.cancelled}
    (tag,) = session.scalars(select(ReleaseTag))
    assert tag.state == "benchmarking" and not set(tag.job_ids) & old_jobs
    assert _versions_measured(session, "0.7.4") == {("0.6.18.post1", "0.7.4")}
    # The same baseline again: nothing to re-run, nothing cancelled.
    same = client.post("/v1/releases", json={"version": "0.7.4", "previous": "0.6.18.post1"},
                       headers=headers).json()
    assert {j["id"] for j in same["jobs"]} == {j["id"] for j in again["jobs"]}
    # A baseline that is not older than the release: refused, naming the field.
    bad = client.post("/v1/releases", json={"version": "0.7.4", "previous": "0.7.4"},
                      headers=headers)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "previous"]
    assert "is not older than 0.7.4" in bad.json()["detail"][0]["msg"]


def test_the_cli_override_re_runs_and_says_so(kw_env: Settings, session: Session,
                                              cpu_node: Node) -> None:
    assert CliRunner().invoke(cli, ["release", "0.7.4"]).exit_code == 0
    out = CliRunner().invoke(cli, ["release", "0.7.4", "--previous", "0.6.18.post1"])
    assert out.exit_code == 0, out.output
    assert "re-run against 0.6.18.post1 (was 0.7.2.post1)" in out.stderr
    assert json.loads(out.stdout)["previous_version"] == "0.6.18.post1"
    same = CliRunner().invoke(cli, ["release", "0.7.4", "--previous", "0.6.18.post1"])
    assert "0.6.18.post1 is already its baseline" in same.stderr


@pytest.mark.parametrize("status", [200, 500])
def test_the_notifications_outcome_is_part_of_the_release(
        kw_env: Settings, session: Session, monkeypatch: pytest.MonkeyPatch,
        status: int) -> None:
    with local_receiver(status) as (url, received):
        configure(monkeypatch, notify_url=url)
        _release_with_finished_jobs(session, planted=1.0)
        on_job_finished(session.scalars(select(ReleaseTag.job_ids)).one()[0])
    with TestClient(create_app()) as client:
        body = client.get("/v1/releases/0.6.18.post1").json()
    note = body["notification"]
    assert note["url"] == url and note["response_code"] == status and note["at"]
    if status == 200:
        assert note == {**note, "sent": True, "attempts": 1, "error": None}
        assert body["verdict"] == "passed" and len(received) == 1
    else:
        assert note["sent"] is False and note["attempts"] == len(received) > 1
        assert note["error"].startswith("HTTP 500")


def test_release_status_shows_progress_regressions_and_verdict(
        api_server: str, session: Session) -> None:
    release = _release_with_finished_jobs(session, planted=1.5)
    on_job_finished(session.scalars(select(ReleaseTag.job_ids)).one()[0])
    # as a GPU node's worker records its builds (kernelwatch.worker.prebuild)
    release.details = {**(release.details or {}), "prebuild": {"h100": {
        "runs": 2, "wall_seconds": 268.4, "jit_seconds": 250.0, "longest_seconds": 268.4,
        "builds": [{"kernel": "rmsnorm", "version": "0.5.3", "wall_seconds": 20.0},
                   {"kernel": "top_k_top_p_sampling_from_logits", "version": "0.6.18.post1",
                    "wall_seconds": 268.4}]}}}
    session.commit()
    out = CliRunner().invoke(cli, ["release", "status", release.version])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())  # the console wraps long lines
    assert ("builds: h100: 2 run(s) built side by side in 268 s before the "
            "first was measured (JIT 250 s in all; the longest, "
            "top_k_top_p_sampling_from_logits on FlashInfer 0.6.18.post1, 268 s)") in text
    assert "release 0.6.18.post1 against 0.5.3" in text
    assert "verdict pending" in text  # a regression is waiting for its confirmation
    assert "confirming" in text and "+50.0%" in text  # the tag and the regression's change
    body = json.loads(CliRunner().invoke(cli, ["release", "status", release.version,
                                               "--json"]).output)
    assert body["tags"]["cpu"]["state"] == "confirming"
    # a record of runs measured as their builds ended: the API carries what says so
    release.details = {**release.details, "prebuild": {"h100": {
        **release.details["prebuild"]["h100"], "measured_as_built": True,
        "builds": [{**b, "ended_after": b["wall_seconds"] + 5.0}
                   for b in release.details["prebuild"]["h100"]["builds"]]}}}
    session.commit()
    body = json.loads(CliRunner().invoke(cli, ["release", "status", release.version,
                                               "--json"]).output)
    record = body["prebuild"]["h100"]
    assert record["measured_as_built"] is True
    assert [b["ended_after"] for b in record["builds"]] == [25.0, 273.4]
    text = " ".join(CliRunner().invoke(cli, ["release", "status", release.version]).output
                    .split())
    assert ("builds: h100: 2 run(s) built side by side, the last after "
            "268 s, each run measured as its own build ended") in text
    missing = CliRunner().invoke(cli, ["release", "status", "9.9.9"])
    assert missing.exit_code != 0 and "not found" in missing.output


def test_release_status_watch_ends_with_the_verdict(api_server: str, session: Session) -> None:
    release = _release_with_finished_jobs(session, planted=1.0)
    on_job_finished(session.scalars(select(ReleaseTag.job_ids)).one()[0])
    out = CliRunner().invoke(cli, ["release", "status", release.version, "--watch",
                                   "--interval", "0.5"])
    assert out.exit_code == 0, out.output
    # It returned on its own: the release was complete.
    assert "verdict passed" in out.output and "notification: not sent" in out.output
