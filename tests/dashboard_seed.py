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

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from kernelwatch.core.compare import compare_runs, persist_comparison
from kernelwatch.core.history import sort_versions
from kernelwatch.core.models import (
    Job,
    Node,
    Point,
    Regression,
    Release,
    ReleaseTag,
    Run,
    TagState,
)
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
           backend: str, status: str = "ok", center: float | None = None) -> None:
    center = center or latency_us(kernel, params, backend, run.flashinfer_version)
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


# --- several FlashInfer versions: the history and release pages ------------------------------

H_KERNEL = "batch_prefill"
H_VERSIONS = ("0.4.0", "0.5.0", "0.5.3", "0.6.0", "0.6.5", "0.6.10")
H_GPUS = ("h100", "a100")
H_RELEASE, H_PREVIOUS = "0.6.0", "0.5.3"
H_KV = (1024, 4096)
H_STEP_KV, H_FASTER_KV = 4096, 1024  # fa2 on the h100: 25% slower / 20% faster from 0.6.0
H_ENV_CHANGE = "0.6.5"  # the a100's driver is upgraded here
H_ENV = {"driver": "570.86.15", "torch": "2.9.1", "torch_cuda": "12.8", "power_limit_w": 700}
H_OLD_DRIVER = "550.54.15"


@dataclass
class HistorySeeded:
    """Ids and keys of the multi-version data set, for the tests' expectations."""

    jobs: list[int] = field(default_factory=list)  # the two sweeps, then the release job
    release_job: int = 0
    step_series: str = ""  # fa2 on the h100 at kv_len 4096: the planted 25% step
    faster_series: str = ""  # fa2 on the h100 at kv_len 1024: 20% faster from 0.6.0
    env_series: str = ""  # fa2 on the a100 at kv_len 4096: its driver changes at 0.6.5
    confirmed: str = ""  # the release's confirmed regression (the step series)
    not_reproduced: str = ""  # torch-sdpa at kv_len 2048, +8% in the release job only
    baseline_only: str = ""  # fa2 at kv_len 512: measured with 0.5.3 only
    contender_only: str = ""  # fa3 at kv_len 4096: measured with 0.6.0 only


def h_params(kv_len: int) -> dict[str, Any]:
    return complete_params(H_KERNEL, {"batch_size": 8, "qo_len": 128, "kv_len": kv_len}, "fa2")


def h_latency(params: dict[str, Any], backend: str, version: str, gpu: str) -> float:
    """A plausible latency with the planted changes: the fa2 step and speed-up on the h100
    from 0.6.0 on."""
    us = latency_us(H_KERNEL, params, backend, None) * (1.4 if gpu == "a100" else 1.0)
    new = sort_versions([version, H_RELEASE])[0] == H_RELEASE
    if backend == "fa2" and gpu == "h100" and new:
        us *= 1.25 if params["kv_len"] == H_STEP_KV else 0.8 if params["kv_len"] == \
            H_FASTER_KV else 1.0
    return us


def _h_job(session: Session, name: str, started: datetime, minutes: float,
           **extra: Any) -> Job:
    job = Job(name=name, kernel=H_KERNEL, spec={"kernel": H_KERNEL}, status="succeeded",
              source="webhook" if extra else "api", total_points=0, created_at=started,
              started_at=started + timedelta(minutes=2),
              finished_at=started + timedelta(minutes=2 + minutes), **extra)
    session.add(job)
    session.flush()
    return job


def _h_run(session: Session, job: Job, version: str, gpu: str) -> Run:
    env = {**H_ENV, "gpu_name": f"NVIDIA {gpu.upper()}", "flashinfer": version}
    if gpu == "a100" and sort_versions([version, H_ENV_CHANGE])[0] == version \
            and version != H_ENV_CHANGE:
        env["driver"] = H_OLD_DRIVER
    run = Run(job_id=job.id, target=gpu, queue=f"kw.{gpu}", flashinfer_version=version,
              point_indices=[], status="succeeded", gpu_name=env["gpu_name"], gpu_sku=gpu,
              timing_method="cuda_graph", environment=env, env_fingerprint=f"seed-{gpu}")
    session.add(run)
    session.flush()
    return run


def _key(session: Session, run_id: int, backend: str, kv_len: int) -> str:
    return next(p.series_key for p in session.execute(
        select(Point).where(Point.run_id == run_id, Point.backend == backend)).scalars()
        if p.params["kv_len"] == kv_len)


def seed_history(session: Session) -> HistorySeeded:
    """batch_prefill on an h100 and an a100 across six FlashInfer versions, measured by two
    sweeps (0.4.0-0.5.3, 0.6.0-0.6.10) and by the release flow's job for 0.6.0 (0.5.3 and
    0.6.0 on the h100, as the release flow measures both), with:
    - fa2 on the h100 25% slower at kv_len 4096 from 0.6.0 on (the step; the release's
      confirmed regression) and 20% faster at kv_len 1024 (an improvement);
    - the a100's driver upgraded at 0.6.5 (every a100 series' history breaks there);
    - in the release job only: torch-sdpa 8% slower at kv_len 2048 (a regression the
      confirmation did not reproduce), fa2 at kv_len 512 with 0.5.3 only and fa3 at 4096
      with 0.6.0 only (one-sided series);
    - the release 0.6.0 vs 0.5.3, complete: the h100 compared, the a100 without a baseline."""
    out = HistorySeeded()
    t0 = datetime.now(UTC) - timedelta(hours=3)
    backends = ("fa2", "torch-sdpa")
    for name, versions in (("prefill history A", H_VERSIONS[:3]),
                           ("prefill history B", H_VERSIONS[3:])):
        job = _h_job(session, name, t0, 50)
        out.jobs.append(job.id)
        for version in versions:
            for gpu in H_GPUS:
                run = _h_run(session, job, version, gpu)
                for i, (kv, backend) in enumerate(itertools.product(H_KV, backends)):
                    params = h_params(kv)
                    _store(session, run, H_KERNEL, i, params, backend,
                           center=h_latency(params, backend, version, gpu))
        job.total_points = len(versions) * len(H_GPUS) * len(H_KV) * len(backends)

    release = Release(version=H_RELEASE, previous_version=H_PREVIOUS, source="webhook",
                      status="complete", created_at=t0 + timedelta(hours=1),
                      notified_at=t0 + timedelta(hours=1, minutes=46),
                      details={"baseline": {"version": H_PREVIOUS,
                                            "source": "FlashInfer's previous release"}})
    session.add(release)
    session.flush()
    job = _h_job(session, f"release {H_RELEASE} on h100", release.created_at, 28,
                 kind="release", release_version=H_RELEASE)
    out.jobs.append(job.id)
    out.release_job = job.id
    runs = {}
    for version in (H_PREVIOUS, H_RELEASE):
        run = runs[version] = _h_run(session, job, version, "h100")
        cells = [(kv, b) for kv in (*H_KV, 2048) for b in backends]
        cells.append((512, "fa2") if version == H_PREVIOUS else (4096, "fa3"))
        for i, (kv, backend) in enumerate(cells):
            params = h_params(kv)
            center = h_latency(params, backend, version, "h100")
            if backend == "torch-sdpa" and kv == 2048 and version == H_RELEASE:
                center *= 1.08
            _store(session, run, H_KERNEL, i, params, backend, center=center)
        job.total_points += len(cells)
    session.flush()
    result = compare_runs(session, [runs[H_PREVIOUS].id], [runs[H_RELEASE].id])
    comp = persist_comparison(session, result, (H_PREVIOUS, H_RELEASE), release_id=release.id)
    out.step_series = out.confirmed = _key(session, runs[H_RELEASE].id, "fa2", H_STEP_KV)
    out.faster_series = _key(session, runs[H_RELEASE].id, "fa2", H_FASTER_KV)
    out.not_reproduced = _key(session, runs[H_RELEASE].id, "torch-sdpa", 2048)
    out.baseline_only = _key(session, runs[H_PREVIOUS].id, "fa2", 512)
    out.contender_only = _key(session, runs[H_RELEASE].id, "fa3", 4096)
    a100_run = session.execute(select(Run.id).where(
        Run.job_id == out.jobs[1], Run.gpu_sku == "a100")).scalars().first()
    out.env_series = _key(session, int(a100_run or 0), "fa2", H_STEP_KV)
    # The confirmation's own re-measurement, as worker.confirm records it.
    for reg in session.execute(select(Regression).where(
            Regression.comparison_id == comp.id)).scalars():
        if reg.series_key == out.confirmed:
            reg.state = "confirmed"
            reg.confirm_ratio, reg.confirm_ci_low, reg.confirm_ci_high = 1.24, 1.23, 1.25
        elif reg.series_key == out.not_reproduced:
            reg.state = "not_reproduced"
            reg.confirm_ratio, reg.confirm_ci_low, reg.confirm_ci_high = 1.004, 0.996, 1.012
    done = release.created_at + timedelta(minutes=45)
    session.add_all([
        ReleaseTag(release_id=release.id, tag="h100", job_ids=[job.id], state=TagState.done,
                   comparison_id=comp.id, counts=result.counts,
                   regressions=len(result.regressions), confirmed=1, not_reproduced=1,
                   baseline_run_ids=[runs[H_PREVIOUS].id],
                   contender_run_ids=[runs[H_RELEASE].id], updated_at=done),
        ReleaseTag(release_id=release.id, tag="a100", job_ids=[], state=TagState.no_baseline,
                   message="no runs of one of the versions", updated_at=done),
    ])
    session.commit()
    return out
