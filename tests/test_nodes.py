"""Nodes: registration by name, heartbeat, and the reaper that puts the runs of dead nodes
(or of this node's previous life) back in the queue."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session

from kernelwatch.core import db
from kernelwatch.core.broker import queue_for_node, queue_for_tag
from kernelwatch.core.jobs import create_job, mark_run_started
from kernelwatch.core.models import Node, Run
from kernelwatch.core.settings import Settings
from kernelwatch.worker.gpu import GpuInfo
from kernelwatch.worker.node import (
    NodeIdentity,
    NodeService,
    identity_for,
    reap_and_requeue,
    register,
)
from tests.conftest import REDIS_URL, configure
from tests.worker_support import tiny_spec


def _ident(name: str, tags: list[str] | None = None) -> NodeIdentity:
    return NodeIdentity(name=name, hostname="testhost", tags=tags or ["cpu"])


def test_gpu_identity_tags_and_queues(kw_env: Settings) -> None:
    gpu = GpuInfo(index=3, name="NVIDIA H100 80GB HBM3", capability=(9, 0),
                  memory_bytes=80 << 30, uuid="GPU-x")
    ident = identity_for(gpu, "nightly, Lab", "box")
    assert ident.name == "box:gpu3" and ident.device == "cuda"
    assert ident.tags == ["hopper", "h100", "nightly", "lab"]
    assert ident.queues == [queue_for_tag(t) for t in ident.tags] + [queue_for_node("box:gpu3")]
    assert queue_for_tag("cpu") not in ident.queues  # a GPU node leaves CPU runs alone
    assert NodeIdentity.from_env(ident.to_env()) == ident


def test_register_upserts_by_name(session: Session) -> None:
    first = register(session, _ident("n1"), ["0.6.18.post1"])
    session.commit()
    again = register(session, _ident("n1", ["cpu", "lab"]), [])
    session.commit()
    assert again.id == first.id
    rows = session.scalars(select(Node).where(Node.name == "n1")).all()
    assert len(rows) == 1
    assert rows[0].tags == ["cpu", "lab"] and rows[0].versions_ready == []
    assert rows[0].queues[-1] == queue_for_node("n1")


def test_heartbeat_thread_moves_last_heartbeat(kw_env: Settings,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, heartbeat_seconds="0.1")
    svc = NodeService(_ident("beating"))
    svc.start()
    try:
        def beat() -> datetime:
            with db.session_scope() as s:
                return s.scalars(select(Node.last_heartbeat).where(Node.name == "beating")).one()
        t0 = beat()
        time.sleep(0.6)
        assert beat() > t0
    finally:
        svc.stop()


def _running_run(session: Session, node: Node) -> Run:
    _, _, runs = create_job(session, tiny_spec(), source="api", submitted_by="t")
    session.flush()
    mark_run_started(session, runs[0], node)
    session.flush()
    return runs[0]


def test_reaper_requeues_runs_of_dead_nodes_and_of_my_previous_life(session: Session) -> None:
    dead = register(session, _ident("dead"), [])
    dead.last_heartbeat = datetime.now(UTC) - timedelta(minutes=10)
    alive = register(session, _ident("alive"), [])
    me = register(session, _ident("me"), [])
    on_dead = _running_run(session, dead)
    on_alive = _running_run(session, alive)
    mine_old = _running_run(session, me)
    mine_now = _running_run(session, me)
    session.commit()
    r = redis.Redis.from_url(REDIS_URL)
    queue = on_dead.queue
    before = r.llen(queue)

    assert reap_and_requeue(this_node_id=me.id, current_run_ids={mine_now.id}) == 2

    session.expire_all()
    status = {run.id: (run.status, run.node_id) for run in session.scalars(select(Run))}
    assert status[on_dead.id] == ("queued", None)
    assert status[mine_old.id] == ("queued", None)
    assert status[on_alive.id] == ("running", alive.id)
    assert status[mine_now.id] == ("running", me.id)
    assert r.llen(queue) == before + 2  # sent again, after the commit
    assert "re-queued" in (session.get(Run, on_dead.id).message or "")  # type: ignore[union-attr]


def test_copy_bandwidth_calibration_runs_in_a_subprocess_and_is_none_without_cuda() -> None:
    import torch

    from kernelwatch.worker.node import calibrate_copy_bandwidth

    if torch.cuda.is_available():
        pytest.skip("covered on GPU machines by the calibration's own test")
    assert calibrate_copy_bandwidth() is None
    assert not torch.cuda.is_initialized()  # this process never touched CUDA


def test_gpu_fingerprint_for_the_node_record(kw_env: Settings) -> None:
    from kernelwatch.worker import gpu as gpu_mod
    from kernelwatch.worker.node import gpu_fingerprint

    assert gpu_fingerprint(_ident("cpu-only")) == {}
    ident = identity_for(GpuInfo(2, "NVIDIA H100 80GB HBM3", (9, 0), 80 << 30, "GPU-abc"), "",
                         "box")
    fp = gpu_fingerprint(ident)
    if not hasattr(gpu_mod, "fingerprint"):
        assert fp == {}
    else:  # what NVML adds depends on the machine; the identity part does not
        assert fp["uuid"] == "GPU-abc" and fp["index"] == 2 and fp["sku"] == "h100"
