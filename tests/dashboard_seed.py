"""A small, known data set for the dashboard's tests, stored through the real storage path
(``kernelwatch.core.results.store_point``), so every derived column comes from the code users run.

What it holds (all on an H100, the 'h100' SKU):
- job "decode sweep" (batch_decode): FlashInfer 0.6.18.post1 and 0.7.2.post1, backends fa2
  and torch-sdpa, batch_size {1, 64} x kv_len {512, 2048, 8192, 32768}. In 0.7.2 fa2 is
  planted 10% slower at kv_len >= 8192 (the regression the compare page must show); fa2 at
  batch 64 / kv 32768 is 'unsupported' in both; torch-sdpa at batch 1 / kv 512 is
  'incorrect' in 0.7.2.
- job "speedup" (single_decode and single_prefill): torch-math, torch-sdpa, fa2.
- two nodes (one live, one stale), one release with a stored comparison and regressions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from kernelwatch.core.compare import compare_runs, persist_comparison
from kernelwatch.core.models import Job, Node, Regression, Release, ReleaseTag, Run, TagState
from kernelwatch.core.results import store_point
from kernelwatch_harness.catalogue import complete_params
from kernelwatch_harness.families.attention.formulas import point_work

GPU = "h100"
V_OLD, V_NEW = "0.6.18.post1", "0.7.2.post1"
BATCHES = (1, 64)
KV_LENS = (512, 2048, 8192, 32768)
N_SAMPLES = 40
ENV = {"gpu_name": "NVIDIA H100 80GB HBM3", "driver_version": "570.86", "cuda_version": "12.8",
       "torch_version": "2.11.0", "sm_count": 132}


@dataclass
class Seeded:
    decode_job: int = 0
    speedup_job: int = 0
    runs: dict[str, int] = field(default_factory=dict)  # version -> run id of the decode job
    regressed: list[dict[str, Any]] = field(default_factory=list)  # planted (params, backend)


def latency_us(kernel: str, params: dict[str, Any], backend: str, version: str | None) -> float:
    """A plausible latency: bytes at a backend-dependent bandwidth plus launch overhead."""
    work = point_work(kernel, params)
    bw = {"fa2": 2.4e12, "torch-sdpa": 1.6e12, "torch-math": 0.6e12}.get(backend, 2.0e12)
    us = work["bytes"] / bw * 1e6 + 6.0
    if backend == "fa2" and version == V_NEW and params.get("kv_len", 0) >= 8192:
        us *= 1.10
    return us


def samples(center: float, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    return [float(v) for v in center * (1.0 + rng.normal(0.0, 0.01, N_SAMPLES))]


def _job(session: Session, name: str, kernel: str, spec: dict[str, Any], total: int) -> Job:
    job = Job(name=name, kernel=kernel, spec=spec, status="succeeded", source="api",
              total_points=total, started_at=datetime.now(UTC), finished_at=datetime.now(UTC))
    session.add(job)
    session.flush()
    return job


def _run(session: Session, job: Job, version: str | None) -> Run:
    run = Run(job_id=job.id, target=GPU, queue=f"kw.{GPU}", flashinfer_version=version,
              point_indices=[], status="succeeded", gpu_name=ENV["gpu_name"], gpu_sku=GPU,
              timing_method="cuda_graph", environment={**ENV, "flashinfer_version": version},
              env_fingerprint="seed")
    session.add(run)
    session.flush()
    return run


def _store(session: Session, run: Run, kernel: str, index: int, params: dict[str, Any],
           backend: str, status: str = "ok") -> None:
    center = latency_us(kernel, params, backend, run.flashinfer_version)
    message: dict[str, Any] = {
        "point_index": index, "backend": backend, "resolved_backend": backend,
        "status": status, "timing_method": "cuda_graph", "throttled": False,
        "samples_us": [] if status == "unsupported" else samples(center, run.id * 1000 + index),
    }
    if status == "unsupported":
        message["error"] = "fa2: batch too large for the workspace"
    if status == "incorrect":
        message["max_abs_error"] = 0.5
    store_point(session, run, kernel, params, message)


def seed(session: Session) -> Seeded:
    out = Seeded()
    # use_tensor_cores given, as a spec would: fa2 and torch-sdpa points share their params
    grid = [complete_params("batch_decode", {"batch_size": b, "kv_len": kv,
                                             "use_tensor_cores": False}, "fa2")
            for b in BATCHES for kv in KV_LENS]
    backends = ("fa2", "torch-sdpa")
    job = _job(session, "decode sweep", "batch_decode",
               {"kernel": "batch_decode", "backends": list(backends),
                "flashinfer_versions": [V_OLD, V_NEW]}, len(grid) * len(backends) * 2)
    out.decode_job = job.id
    for version in (V_OLD, V_NEW):
        run = _run(session, job, version)
        out.runs[version] = run.id
        for i, params in enumerate(grid):
            for backend in backends:
                status = "ok"
                if backend == "fa2" and params["batch_size"] == 64 and params["kv_len"] == 32768:
                    status = "unsupported"
                if (backend == "torch-sdpa" and version == V_NEW and params["batch_size"] == 1
                        and params["kv_len"] == 512):
                    status = "incorrect"
                _store(session, run, "batch_decode", i, params, backend, status)
                if (version == V_NEW and backend == "fa2" and status == "ok"
                        and params["kv_len"] >= 8192):
                    out.regressed.append({"params": params, "backend": backend})

    sp = _job(session, "speedup", "single_decode", {"kernel": "single_decode"}, 6)
    out.speedup_job = sp.id
    run = _run(session, sp, V_NEW)
    idx = 0
    for kernel, extra in (("single_decode", {"kv_len": 4096}),
                          ("single_prefill", {"qo_len": 2048, "kv_len": 2048, "causal": True})):
        params = complete_params(kernel, extra, "fa2")  # single kernels: the same for all
        for backend in ("torch-math", "torch-sdpa", "fa2"):
            _store(session, run, kernel, idx, params, backend)
            idx += 1

    now = datetime.now(UTC)
    session.add_all([
        Node(name="gpu-host-1:gpu0", hostname="gpu-host-1", gpu_index=0,
             gpu_name=ENV["gpu_name"], gpu_sku=GPU, arch="hopper",
             tags=["h100", "hopper"], queues=["kw.h100"], versions_ready=[V_OLD, V_NEW],
             copy_bandwidth_tbps=2.9, last_heartbeat=now - timedelta(seconds=4)),
        Node(name="gpu-host-2:gpu0", hostname="gpu-host-2", gpu_index=0,
             gpu_name=ENV["gpu_name"], gpu_sku=GPU, arch="hopper", tags=["h100"],
             queues=["kw.h100"], versions_ready=[V_OLD],
             last_heartbeat=now - timedelta(minutes=30)),
    ])
    release = Release(version=V_NEW, previous_version=V_OLD, source="webhook",
                      status="complete", details={})
    session.add(release)
    session.flush()
    # The release's comparison through the real engine; the first regression is marked
    # confirmed as the confirmation task would.
    result = compare_runs(session, [out.runs[V_OLD]], [out.runs[V_NEW]])
    comp = persist_comparison(session, result, (V_OLD, V_NEW), release_id=release.id)
    regs = session.execute(select(Regression).where(Regression.comparison_id == comp.id)
                           .order_by(Regression.id)).scalars().all()
    if regs:
        regs[0].state = "confirmed"
        regs[0].confirm_ratio, regs[0].confirm_ci_low, regs[0].confirm_ci_high = 1.1, 1.09, 1.11
    # The release flow's record of it (core/releases.py): per GPU tag, its jobs and state.
    session.add(ReleaseTag(release_id=release.id, tag=GPU, job_ids=[job.id],
                           state=TagState.done, comparison_id=comp.id,
                           regressions=len(regs), baseline_run_ids=[out.runs[V_OLD]],
                           contender_run_ids=[out.runs[V_NEW]]))
    session.commit()
    return out
