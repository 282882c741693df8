"""This worker process as a node: who it is (GPU, tags, queues), its row in ``nodes``, its
heartbeat, and the reaper that puts runs of dead nodes back in the queue.

A node is one GPU (or the CPU) served by one Celery worker process with concurrency 1. The
launcher (``kernelwatch worker``) decides the identity and hands it to the process in the
``KERNELWATCH_NODE`` environment variable; a worker started by hand with
``celery -A worker.celery_app worker`` works its identity out the same way.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from kernelwatch.core import outbox
from kernelwatch.core.broker import queue_for_node, queue_for_tag
from kernelwatch.core.db import session_scope
from kernelwatch.core.jobs import enqueue_after_commit
from kernelwatch.core.models import JobStatus, Node, Run, utcnow
from kernelwatch.core.nodes import is_alive, live_cutoff
from kernelwatch.core.settings import get_settings

log = logging.getLogger(__name__)

NODE_ENV = "KERNELWATCH_NODE"


@dataclass
class NodeIdentity:
    name: str
    hostname: str
    tags: list[str]
    gpu_index: int | None = None
    gpu_name: str | None = None
    gpu_sku: str | None = None
    arch: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> str:
        return "cpu" if self.gpu_index is None else "cuda"

    @property
    def queues(self) -> list[str]:
        """The queue of each tag, then the node's own (for work that must run right here)."""
        return [queue_for_tag(t) for t in self.tags] + [queue_for_node(self.name)]

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, raw: str) -> NodeIdentity:
        return cls(**json.loads(raw))


def identity_for(gpu: Any | None, extra_tags: str = "", name_override: str = "") -> NodeIdentity:
    """The identity of the node serving ``gpu`` (a worker.gpu.GpuInfo) or the CPU (None)."""
    from kernelwatch.worker.gpu import node_name, tags_for

    return NodeIdentity(
        name=node_name(gpu, name_override),
        hostname=socket.gethostname(),
        tags=tags_for(gpu, extra_tags),
        gpu_index=None if gpu is None else gpu.index,
        gpu_name=None if gpu is None else gpu.name,
        gpu_sku=None if gpu is None else gpu.sku,
        arch=None if gpu is None else gpu.arch,
        extra={} if gpu is None else {"uuid": gpu.uuid, "memory_bytes": gpu.memory_bytes,
                                      "capability": list(gpu.capability)},
    )


def current_identity() -> NodeIdentity:
    """This process's identity: the launcher's, or worked out from the GPUs it can see
    (exactly one GPU visible: that GPU; none: the CPU)."""
    raw = os.environ.get(NODE_ENV)
    if raw:
        return NodeIdentity.from_env(raw)
    from kernelwatch.worker.gpu import detect_gpus

    settings = get_settings()
    gpus = detect_gpus()
    if len(gpus) > 1:
        raise RuntimeError(
            f"this process sees {len(gpus)} GPUs; a worker process serves one: start workers "
            "with `kernelwatch worker` (one process per GPU) or set CUDA_VISIBLE_DEVICES"
        )
    return identity_for(gpus[0] if gpus else None, settings.worker_tags, settings.worker_name)


def register(session: Session, ident: NodeIdentity, versions_ready: list[str],
             environment: dict[str, Any] | None = None) -> Node:
    """Insert or update this node's row (by name) and stamp its start and heartbeat."""
    now = datetime.now(UTC)
    node = session.scalars(select(Node).where(Node.name == ident.name)).one_or_none()
    if node is None:
        node = Node(name=ident.name)
        session.add(node)
    node.hostname = ident.hostname
    node.gpu_index = ident.gpu_index
    node.gpu_name = ident.gpu_name
    node.gpu_sku = ident.gpu_sku
    node.arch = ident.arch
    node.tags = list(ident.tags)
    node.queues = ident.queues
    node.versions_ready = list(versions_ready)
    node.environment = {**(environment or {}), **ident.extra, "pid": os.getpid()}
    node.started_at = now
    node.last_heartbeat = now
    session.flush()
    return node


def calibrate_copy_bandwidth(timeout: float = 300) -> dict[str, Any] | None:
    """Device-to-device copy bandwidth of this process's GPU (worker/calibrate.py), measured
    in a subprocess: the worker process itself never holds a CUDA context, which would take
    GPU memory from every measurement. None without CUDA or when it fails."""
    from kernelwatch.worker.runner import harness_env

    try:
        out = subprocess.run([sys.executable, "-m", "kernelwatch.worker.calibrate"],
                             capture_output=True, text=True, timeout=timeout, env=harness_env())
        lines = out.stdout.strip().splitlines()
        result = json.loads(lines[-1]) if out.returncode == 0 and lines else None
    except (subprocess.TimeoutExpired, json.JSONDecodeError, OSError) as e:
        log.warning("copy-bandwidth calibration failed: %s", e)
        return None
    if result is None and out.returncode != 0:
        log.warning("copy-bandwidth calibration failed: %s", out.stderr.strip()[-500:])
    return result if isinstance(result, dict) else None


def gpu_fingerprint(ident: NodeIdentity) -> dict[str, Any]:
    """NVML facts about the node's GPU (driver, power limit, clocks, ECC/MIG, PCI bus), from
    ``worker.gpu.fingerprint`` when that exists; {} for a CPU node or when NVML is silent."""
    if ident.gpu_index is None:
        return {}
    from kernelwatch.worker import gpu as gpu_mod

    fingerprint = getattr(gpu_mod, "fingerprint", None)
    if fingerprint is None:
        return {}
    info = gpu_mod.GpuInfo(
        index=ident.gpu_index, name=ident.gpu_name or "",
        capability=tuple(ident.extra.get("capability") or (0, 0)),  # type: ignore[arg-type]
        memory_bytes=int(ident.extra.get("memory_bytes") or 0),
        uuid=str(ident.extra.get("uuid") or ""),
    )
    try:
        return dict(fingerprint(info))
    except Exception:  # NVML trouble must not keep a worker from starting
        log.exception("GPU fingerprint failed")
        return {}


def heartbeat(session: Session, node_id: int) -> None:
    node = session.get(Node, node_id)
    if node is not None:
        node.last_heartbeat = datetime.now(UTC)


def reap(session: Session, this_node_id: int | None = None,
         current_run_ids: Collection[int] = ()) -> list[Run]:
    """Put back to ``queued`` the runs that no live process is executing: runs marked running on
    a node whose heartbeat is stale, and runs marked running on *this* node other than the ones
    it is executing now (they belong to a previous life of this node: killed, restarted).
    Returns them, to be enqueued once the caller commits (``core.jobs.enqueue_after_commit``)."""
    now = utcnow()
    running = session.scalars(
        select(Run).where(Run.status == JobStatus.running).with_for_update(skip_locked=True)
    ).all()
    node_ids = {r.node_id for r in running if r.node_id is not None}
    nodes = {n.id: n for n in session.scalars(select(Node).where(Node.id.in_(node_ids)))}
    reaped = []
    for run in running:
        node = nodes.get(run.node_id) if run.node_id is not None else None
        mine = this_node_id is not None and run.node_id == this_node_id
        dead = not is_alive(node, now)
        if (mine and run.id not in current_run_ids) or (not mine and dead):
            log.warning("run %s was running on %s, which is gone: queued again", run.id,
                        node.name if node else "an unknown node")
            run.status = JobStatus.queued
            run.node_id = None
            run.message = (f"re-queued: node {node.name if node else '?'} stopped while "
                           "running it; stored points are kept and not measured again")
            reaped.append(run)
    session.flush()
    return reaped


def reap_and_requeue(this_node_id: int | None = None,
                     current_run_ids: Collection[int] = ()) -> int:
    with session_scope() as session:
        runs = reap(session, this_node_id, current_run_ids)
        enqueue_after_commit(session, runs)
    failed = outbox.failures(session)
    if failed:
        raise failed[0].error
    return len(runs)


class NodeService:
    """The node's life in this process: register at start, then a daemon thread that beats
    every ``heartbeat_seconds`` and reaps every ``node_stale_seconds / 2``."""

    def __init__(self, ident: NodeIdentity) -> None:
        self.ident = ident
        self.node_id: int | None = None
        self.current_run_id: int | None = None
        # Runs this process has claimed and will measure later in the task under way (a
        # release's run waits while the runs whose builds ended first are measured)
        self.held_run_ids: set[int] = set()
        # The releases whose JIT modules this worker built before their first run (prebuild)
        self.prebuilt: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        from kernelwatch.worker.envs import ready_versions

        # Before the first run, never during one: the copy would disturb a measurement.
        calibration = calibrate_copy_bandwidth() if self.ident.device == "cuda" else None
        environment = gpu_fingerprint(self.ident)
        if calibration:
            environment["copy_bandwidth"] = calibration
        with session_scope() as session:
            node = register(session, self.ident, ready_versions(), environment)
            if calibration and calibration.get("copy_bandwidth_tbps"):
                node.copy_bandwidth_tbps = round(float(calibration["copy_bandwidth_tbps"]), 4)
            self.node_id = node.id
        log.info("node %s registered (id %s), tags %s", self.ident.name, self.node_id,
                 ", ".join(self.ident.tags))
        self.reap_once()
        self._thread = threading.Thread(target=self._loop, name="kw-heartbeat", daemon=True)
        self._thread.start()
        return self.node_id

    def reap_once(self) -> int:
        try:
            mine = {r for r in (self.current_run_id, *tuple(self.held_run_ids)) if r is not None}
            reaped = reap_and_requeue(self.node_id, mine)
        except Exception:  # the reaper must never take the worker down
            log.exception("reaper failed")
            reaped = 0
        try:
            from kernelwatch.core.releases import redrive_releases

            redrive_releases()
        except Exception:
            log.exception("release re-drive failed")
        return reaped

    def stop(self) -> None:
        """Stop beating and mark the node gone (heartbeat in the past), so that other nodes'
        reapers take over a run it leaves behind without waiting ``node_stale_seconds``."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.node_id is None:
            return
        try:
            with session_scope() as session:
                node = session.get(Node, self.node_id)
                if node is not None:
                    node.last_heartbeat = live_cutoff() - timedelta(seconds=1)
        except Exception:
            log.exception("could not mark node %s stopped", self.ident.name)

    def _loop(self) -> None:
        settings = get_settings()
        interval = max(0.05, settings.heartbeat_seconds)
        reap_every = max(interval, settings.node_stale_seconds / 2)
        since_reap = 0.0
        while not self._stop.wait(interval):
            try:
                with session_scope() as session:
                    assert self.node_id is not None
                    heartbeat(session, self.node_id)
            except Exception:
                log.exception("heartbeat failed")
            since_reap += interval
            if since_reap >= reap_every:
                since_reap = 0.0
                self.reap_once()


# The node this process serves (set when the Celery worker is ready).
_service: NodeService | None = None


def service() -> NodeService | None:
    return _service


def start_service(ident: NodeIdentity | None = None) -> NodeService:
    global _service
    if _service is None:
        _service = NodeService(ident or current_identity())
        _service.start()
    return _service


def stop_service() -> None:
    global _service
    if _service is not None:
        _service.stop()
        _service = None
