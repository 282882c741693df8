"""Parameter defaults per backend: a point's parameters are completed for the backend that runs
it, with what flashinfer_benchmark.py builds that backend's wrapper with; a value the spec gives
is used for every backend. What the harness runs, what is stored and the series key agree."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from kernelwatch.core.compare.runs import compare_runs
from kernelwatch.core.jobs import create_job, mark_run_started
from kernelwatch.core.models import Job, Point, Run
from kernelwatch.core.results import store_point
from kernelwatch.core.series import series_key
from kernelwatch.core.settings import Settings
from kernelwatch.core.spec import SweepSpec
from kernelwatch_harness.catalogue import (
    KERNELS,
    PARAMS,
    TORCH_BACKENDS,
    backend_defaults,
    complete_params,
)
from kernelwatch_harness.families.attention.flashinfer_backends import check_decode_backend

DECODE = {"batch_size": [2], "kv_len": [64, 128], "num_qo_heads": [4], "num_kv_heads": [2],
          "head_dim": [64]}


def _spec(kernel: str, backends: list[str], **params: Any) -> SweepSpec:
    return SweepSpec(name="defaults", kernel=kernel, backends=backends, targets=["h200"],
                     flashinfer_versions=["0.7.2.post1"], params={**DECODE, **params})


def test_the_defaults_are_what_flashinfer_benchmark_builds() -> None:
    decode = {b: backend_defaults("batch_decode", b) for b in KERNELS["batch_decode"].backends}
    assert {b: d["use_tensor_cores"] for b, d in decode.items()} == {
        "auto": True, "fa2": False, "fa3": True, "trtllm-gen": True, "cudnn": True,
        "torch-sdpa": True, "torch-math": True}
    assert all(d["kv_layout"] == "HND" and d["use_cuda_graph"] for d in decode.values())
    prefill = {b: backend_defaults("batch_prefill", b) for b in KERNELS["batch_prefill"].backends}
    assert {b for b, d in prefill.items() if d["kv_layout"] == "NHD"} == {"cudnn"}
    assert {b for b, d in prefill.items() if not d["use_cuda_graph"]} == {"fa2"}
    ragged = KERNELS["batch_prefill_ragged"].backends
    assert {b for b in ragged if not backend_defaults("batch_prefill_ragged", b)
            ["use_cuda_graph"]} == {"fa2"}
    assert all(backend_defaults("mla_decode", b)["use_cuda_graph"]
               for b in KERNELS["mla_decode"].backends)


def test_torch_backends_take_the_default_backends_defaults() -> None:
    for kernel, spec in KERNELS.items():
        for torch_backend in TORCH_BACKENDS:
            assert backend_defaults(kernel, torch_backend) == backend_defaults(kernel, "auto")
        assert list(backend_defaults(kernel, "auto")) == list(spec.params)


def test_the_single_kernels_keep_flashinfers_own_defaults_for_every_backend() -> None:
    for kernel in ("single_decode", "single_prefill"):
        for backend in KERNELS[kernel].backends:
            d = backend_defaults(kernel, backend)
            assert d == {n: PARAMS[n].default for n in KERNELS[kernel].params}
            assert d["kv_layout"] == "NHD"
    assert backend_defaults("single_decode", "fa2")["use_tensor_cores"] is False


def test_a_spec_point_is_completed_per_backend_and_given_values_win() -> None:
    spec = _spec("batch_decode", ["fa2", "fa3", "torch-sdpa"])
    (point, _) = spec.backend_points()
    assert point["fa2"]["use_tensor_cores"] is False
    assert point["fa3"]["use_tensor_cores"] is True
    assert point["torch-sdpa"] == complete_params("batch_decode", spec.combinations()[0], "auto")
    assert {p["kv_layout"] for p in point.values()} == {"HND"}
    given = _spec("batch_decode", ["fa2", "fa3"], use_tensor_cores=[True], kv_layout=["NHD"])
    (point, _) = given.backend_points()
    assert point["fa2"] == point["fa3"]
    assert point["fa2"]["use_tensor_cores"] is True and point["fa2"]["kv_layout"] == "NHD"
    assert given.grid("fa2") == [point["fa2"] for point in given.backend_points()]
    # what a backend does not get by default it gets when asked: fa2 with tensor cores
    assert complete_params("batch_decode", {"use_tensor_cores": True}, "fa2")[
        "use_tensor_cores"] is True


def test_series_keys_differ_where_backend_defaults_differ() -> None:
    spec = _spec("batch_decode", ["fa2", "auto"])
    (point, _) = spec.backend_points()
    assert point["fa2"] != point["auto"]
    # the same shape under fa2's params is another series than under auto's, backend aside
    assert series_key("batch_decode", point["fa2"], "auto", "h200") != series_key(
        "batch_decode", point["auto"], "auto", "h200")


def test_fa3_and_cudnn_decode_are_measured_by_default_and_refused_only_when_asked() -> None:
    for backend in KERNELS["batch_decode"].flashinfer_backends:
        check_decode_backend(backend, backend_defaults("batch_decode", backend)
                             ["use_tensor_cores"], "0.6.18.post1")
    explicit = complete_params("batch_decode", {"use_tensor_cores": False}, "fa3")
    with pytest.raises(NotImplementedError, match="use_tensor_cores"):
        check_decode_backend("fa3", explicit["use_tensor_cores"], "0.6.18.post1")


def test_the_worker_sends_and_stores_each_backends_params(kw_env: Settings,
                                                          session: Session) -> None:
    """build_request sends each backend its own params; every point is stored with them and
    keyed by them (on CPU the harness reports fa2 and fa3 unsupported: stored all the same)."""
    from kernelwatch.worker.tasks import build_request, measure_run

    spec = _spec("batch_decode", ["fa2", "fa3"])
    job, _, runs = create_job(session, spec, source="api", submitted_by="t")
    session.commit()
    run = runs[0]
    request = build_request(session, run, job, "cpu")
    for i in run.point_indices:
        for backend in spec.backends:
            assert request.params(i, backend) == spec.grid(backend)[i]
    mark_run_started(session, run, None)
    session.commit()
    measure_run(session, run, job, "cpu")
    points = session.scalars(select(Point).where(Point.run_id == run.id)).all()
    assert len(points) == len(run.point_indices) * 2
    for p in points:
        expected = spec.grid(p.backend)[p.point_index]
        assert p.params == expected
        assert p.series_key == series_key("batch_decode", expected, p.backend, None)
    assert {p.params["use_tensor_cores"] for p in points if p.backend == "fa2"} == {False}
    assert {p.params["use_tensor_cores"] for p in points if p.backend == "fa3"} == {True}


def test_stored_points_of_the_old_defaults_are_another_series(session: Session) -> None:
    """Points stored before defaults followed the backend have their full parameters
    (kv_layout NHD, no tensor cores): they keep them and their keys, and a comparison does
    not match them with new default points (HND), which are another experiment."""
    old = complete_params("batch_decode", {"kv_layout": "NHD", "use_tensor_cores": False},
                          "auto")
    new = complete_params("batch_decode", {}, "auto")
    assert old != new
    job = Job(name="old and new", kernel="batch_decode", spec={}, status="succeeded")
    session.add(job)
    session.flush()
    run_ids = []
    for version, params in (("0.6.18.post1", old), ("0.7.2.post1", new)):
        run = Run(job_id=job.id, target="h200", queue="q", point_indices=[0],
                  flashinfer_version=version, gpu_sku="h200", status="succeeded")
        session.add(run)
        session.flush()
        store_point(session, run, "batch_decode", params,
                    {"type": "point", "point_index": 0, "backend": "auto", "status": "ok",
                     "error": None, "samples_us": [10.0, 10.1, 10.2, 10.1]})
        run_ids.append(run.id)
    session.commit()
    result = compare_runs(session, [run_ids[0]], [run_ids[1]])
    assert len(result.points) == 2
    assert sorted((bool(p.baseline_point_ids), bool(p.contender_point_ids))
                  for p in result.points) == [(False, True), (True, False)]
    assert all(p.ratio is None for p in result.points)

