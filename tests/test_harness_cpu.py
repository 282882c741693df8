"""The harness on CPU: the JSON-lines protocol end to end (a real subprocess), every kernel with
the torch backends checked against the float32 reference, and the incorrect / unsupported /
error / skip / fatal paths."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from kernelwatch_harness import backend_packages, measure
from kernelwatch_harness.catalogue import KERNELS, complete_params
from kernelwatch_harness.families.attention.formulas import point_work
from kernelwatch_harness.families.attention.inputs import flashinfer_inputs, torch_inputs
from kernelwatch_harness.families.attention.reference import attend_fp32, causal_mask
from kernelwatch_harness.families.attention.torch_backends import prepare_torch
from kernelwatch_harness.prepared import Prepared
from kernelwatch_harness.protocol import PROTOCOL_VERSION

REPO = Path(__file__).resolve().parent.parent
SMALL = {"batch_size": 3, "kv_len": 40, "qo_len": 6, "num_qo_heads": 4, "num_kv_heads": 2,
         "head_dim": 64, "page_size": 8, "causal": True, "kv_len_distribution": "zipf",
         "seed": 3}
MLA = {"batch_size": 2, "kv_len": 30, "num_qo_heads": 4, "page_size": 8,
       "kv_len_distribution": "uniform"}
TIMING = {"warmup": 1, "iterations": 5, "repeats": 1}


def params_for(kernel: str, backend: str = "torch-sdpa", **extra: Any) -> dict[str, Any]:
    base = MLA if kernel == "mla_decode" else SMALL
    given = {k: v for k, v in {**base, **extra}.items() if k in KERNELS[kernel].params}
    return complete_params(kernel, given, backend)


def request_points(kernel: str, backends: list[str],
                   *extras: dict[str, Any]) -> list[dict[str, Any]]:
    """A request's points, one per ``extras``, completed for each backend as the service
    sends them."""
    return [{"point_index": i,
             "params_by_backend": {b: params_for(kernel, b, **extra) for b in backends}}
            for i, extra in enumerate(extras)]


def run_harness(request: dict[str, Any] | str) -> list[dict[str, Any]]:
    """Messages of a real harness subprocess; a dict request speaks this protocol version."""
    text = request if isinstance(request, str) else json.dumps(
        {"protocol": PROTOCOL_VERSION, **request})
    proc = subprocess.run([sys.executable, "-m", "kernelwatch_harness"], input=text,
                          capture_output=True, text=True, cwd=REPO, timeout=240)
    return [json.loads(line) for line in proc.stdout.splitlines()]


ATTENTION = [k for k, v in KERNELS.items() if v.family == "attention"]


@pytest.mark.parametrize("kernel", ATTENTION)
def test_protocol_every_kernel_with_torch_backends(kernel: str) -> None:
    backends = ["torch-sdpa", "torch-math"]
    # the second point in the layout the kernel does not default to: both are covered
    other = {"NHD": "HND", "HND": "NHD"}[params_for(kernel).get("kv_layout", "NHD")]
    points = request_points(kernel, backends, {},
                            {"kv_layout": other, "dtype": "float16",
                             "kv_len_distribution": "constant"})
    msgs = run_harness({"kernel": kernel, "device": "cpu", "backends": backends,
                        "timing": TIMING, "points": points, "skip": [[1, "torch-math"]]})
    # one repeat each: the runner is told each unit's start before its point
    assert [m["type"] for m in msgs] == ["env"] + ["start", "point"] * 3 + ["done"]
    assert [(m["point_index"], m["backend"]) for m in msgs if m["type"] == "start"] == [
        (m["point_index"], m["backend"]) for m in msgs if m["type"] == "point"]
    msgs = [m for m in msgs if m["type"] != "start"]
    env = msgs[0]
    assert env["timing_method"] == "cpu_perf_counter" and env["environment"]["torch"]
    # the optional backends' packages the env has (none of them here)
    assert env["environment"]["backend_packages"] == backend_packages.installed()
    done = {(m["point_index"], m["backend"]) for m in msgs if m["type"] == "point"}
    assert done == {(0, "torch-sdpa"), (0, "torch-math"), (1, "torch-sdpa")}  # skip honoured
    for m in msgs[1:-1]:
        assert m["status"] == "ok", m["error"]
        assert m["timing_method"] == "cpu_perf_counter"
        assert len(m["samples_us"]) == 5 and all(s > 0 for s in m["samples_us"])
        assert m["max_abs_error"] <= m["telemetry"]["tolerance"]
        assert m["resolved_backend"] == m["backend"] and m["plan_seconds"] is None
        # which of SDPA's kernels torch ran; not a question for the hand-written torch-math
        sdpa_kernels = set(torch.nn.attention.SDPBackend.__members__) - {"ERROR"}
        assert (m["telemetry"].get("sdpa_kernel") in sdpa_kernels) == (m["backend"] == "torch-sdpa")


def test_unsupported_and_error_paths_do_not_stop_the_harness() -> None:
    backends = ["fa2", "bogus", "torch-sdpa"]
    bad_heads = {"num_qo_heads": 6, "num_kv_heads": 4}  # not a whole group
    fp8 = {"kv_dtype": "float8_e4m3fn"}
    msgs = run_harness({"kernel": "batch_decode", "device": "cpu", "backends": backends,
                        "timing": TIMING,
                        "points": request_points("batch_decode", backends, {}, bad_heads, fp8)})
    by = {(m["point_index"], m["backend"]): m for m in msgs if m["type"] == "point"}
    assert msgs[-1]["type"] == "done" and len(by) == 9
    assert by[(0, "fa2")]["status"] == "unsupported" and "CUDA" in by[(0, "fa2")]["error"]
    assert by[(0, "bogus")]["status"] == "unsupported"
    assert "allowed: auto, fa2" in by[(0, "bogus")]["error"]
    assert by[(0, "torch-sdpa")]["status"] == "ok"
    assert by[(1, "torch-sdpa")]["status"] == "error" and by[(1, "torch-sdpa")]["error"]
    assert by[(1, "torch-sdpa")]["samples_us"] == []
    assert by[(2, "torch-sdpa")]["status"] == "unsupported"
    assert "fp8" in by[(2, "torch-sdpa")]["error"]


def test_incorrect_output_is_flagged_with_its_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = measure._prepare

    def off_by_a_bit(backend: str, inp: Any, device: str) -> Prepared:
        p = real(backend, inp, device)
        return Prepared(lambda d: p.fn(d) + 0.25, p.outputs, p.resolved_backend)

    monkeypatch.setattr(measure, "_prepare", off_by_a_bit)
    m = measure.Measurer("cpu", TIMING).measure("single_decode", 0,
                                                params_for("single_decode"), "torch-sdpa")
    assert m["status"] == "incorrect"
    assert m["max_abs_error"] == pytest.approx(0.25, abs=0.05)
    assert "exceeds" in m["error"] and len(m["samples_us"]) == 5  # still timed, flagged


def test_repeats_pool_samples_and_record_each_repeat() -> None:
    """A point measured in 3 repeats: its samples in repeat order, their split, and each
    repeat's median; a unit that is unsupported ends at once and comes out first."""
    backends = ["torch-sdpa", "fa2"]
    msgs = run_harness({"kernel": "batch_decode", "device": "cpu", "backends": backends,
                        "timing": {"warmup": 1, "iterations": 7, "repeats": 3},
                        "points": request_points("batch_decode", backends, {}, {})})
    points = [m for m in msgs if m["type"] == "point"]
    # fa2 has no CUDA here: both fa2 units end in repeat 1, before any torch-sdpa unit
    assert [(m["point_index"], m["backend"]) for m in points] == [
        (0, "fa2"), (1, "fa2"), (0, "torch-sdpa"), (1, "torch-sdpa")]
    assert points[0]["status"] == "unsupported" and points[0]["repeat_sizes"] == []
    for m in points[2:]:
        assert m["status"] == "ok", m["error"]
        assert m["repeat_sizes"] == [3, 3, 3] and len(m["samples_us"]) == 9
        reps = m["telemetry"]["repeats"]
        assert len(reps) == 3
        for k, rep in enumerate(reps):
            assert rep["median_us"] == sorted(m["samples_us"][3 * k : 3 * k + 3])[1]
            # each repeat's wall time: at least its samples' time
            assert rep["seconds"] >= sum(m["samples_us"][3 * k : 3 * k + 3]) / 1e6


class _Recorder:
    """Stands in for the Measurer to show the order repeats are measured in."""

    repeats = 3

    def __init__(self) -> None:
        self.calls: list[tuple[int, str, int]] = []

    def measure(self, kernel: str, index: int, params: dict[str, Any], backend: str,
                previous: dict[str, Any] | None = None) -> dict[str, Any]:
        msg = previous or {"type": "point", "point_index": index, "backend": backend,
                           "status": "ok", "max_abs_error": None, "telemetry": {}, "n": 0}
        msg["n"] += 1
        self.calls.append((index, backend, msg["n"]))
        return msg


def test_repeats_are_interleaved_across_points() -> None:
    import io

    from kernelwatch_harness.__main__ import measure_interleaved

    rec, out = _Recorder(), io.StringIO()
    units = [(0, {}, "a"), (1, {}, "a"), (2, {}, "a")]
    measure_interleaved(rec, "single_decode", units, out)
    assert rec.calls == [(i, "a", r) for r in (1, 2, 3) for i in (0, 1, 2)]
    emitted = [json.loads(line) for line in out.getvalue().splitlines()]
    starts = [m for m in emitted if m["type"] == "start"]
    assert [(m["point_index"], m["backend"], m["repeat"]) for m in starts] == rec.calls
    points = [m for m in emitted if m["type"] != "start"]
    assert [(m["point_index"], m["n"]) for m in points] == [(0, 3), (1, 3), (2, 3)]


def test_a_failed_later_repeat_fails_the_point(monkeypatch: pytest.MonkeyPatch) -> None:
    real = measure._prepare
    calls = {"n": 0}

    def fails_second_time(backend: str, inp: Any, device: str) -> Prepared:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("device lost")
        return real(backend, inp, device)

    monkeypatch.setattr(measure, "_prepare", fails_second_time)
    m = measure.Measurer("cpu", {"warmup": 1, "iterations": 4, "repeats": 2})
    msg = m.measure("single_decode", 0, params_for("single_decode"), "torch-sdpa")
    assert msg["repeat_sizes"] == [2]
    msg = m.measure("single_decode", 0, params_for("single_decode"), "torch-sdpa", msg)
    assert msg["status"] == "error" and msg["error"].startswith("repeat 2: RuntimeError")
    assert msg["samples_us"] == [] and msg["repeat_sizes"] == []


def test_fatal_messages() -> None:
    assert run_harness("{not json")[0]["type"] == "fatal"
    if not torch.cuda.is_available():
        msgs = run_harness({"kernel": "single_decode", "device": "cuda", "backends": ["fa2"],
                            "points": []})
        assert msgs == [{"type": "fatal", "error": msgs[0]["error"]}]
        assert "CUDA" in msgs[0]["error"]


def test_lengths_are_the_services() -> None:
    for kernel in ATTENTION:
        p = params_for(kernel)
        inp = flashinfer_inputs(kernel, p, "cpu")
        work = point_work(kernel, p)
        assert inp.kv_lens == work["kv_lens"] and inp.qo_lens == work["qo_lens"]
        reqs = inp.requests()
        assert [r[0].shape[0] for r in reqs] == work["qo_lens"]
        assert [r[1].shape[0] for r in reqs] == work["kv_lens"]


def test_paged_cache_holds_each_request_in_its_pages() -> None:
    p = params_for("batch_prefill", kv_layout="HND")
    inp = flashinfer_inputs("batch_prefill", p, "cpu")
    cache, ps = inp.data["kv_cache"], p["page_size"]
    indices, indptr = inp.meta["kv_indices"].tolist(), inp.meta["kv_indptr"].tolist()
    last = inp.meta["kv_last_page_len"].tolist()
    for i, (_, k, v) in enumerate(inp.requests()):
        pages = indices[indptr[i]:indptr[i + 1]]
        assert (len(pages) - 1) * ps + last[i] == inp.kv_lens[i]
        # token t of request i lives in page pages[t // ps], slot t % ps (HND: [H, slot, D])
        for t in (0, inp.kv_lens[i] - 1):
            assert torch.equal(k[t], cache[pages[t // ps], 0, :, t % ps])
            assert torch.equal(v[t], cache[pages[t // ps], 1, :, t % ps])


def test_reference_causal_alignment_is_bottom_right() -> None:
    assert causal_mask(2, 4, torch.device("cpu")).tolist() == [[True, True, True, False],
                                                                [True, True, True, True]]
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(s, generator=g) for s in ((2, 2, 8), (4, 1, 8), (4, 1, 8)))
    out = attend_fp32((q, k, v), 0.5, causal=True)
    # query 0 of 2 against 4 keys sees keys 0..2; heads 0 and 1 share KV head 0
    for h in range(2):
        w = torch.softmax((k[:3, 0] @ q[0, h]) * 0.5, dim=0)
        assert torch.allclose(out[0, h], w @ v[:3, 0], atol=1e-6)


def test_torch_math_and_sdpa_agree_on_variable_lengths() -> None:
    p = params_for("batch_prefill_ragged", dtype="float16")
    inp = torch_inputs("batch_prefill_ragged", p, "cpu")
    assert not inp.dense  # zipf lengths: one tensor per request
    outs = {}
    for backend in ("torch-sdpa", "torch-math"):
        prepared = prepare_torch(backend, inp, 0.125)
        outs[backend] = prepared.outputs(prepared.fn(inp.data))
    for a, b in zip(outs["torch-sdpa"], outs["torch-math"], strict=True):
        assert a.shape == b.shape
        assert float((a.float() - b).abs().max()) < 1e-2
    assert not any(math.isnan(float(o.sum())) for o in outs["torch-math"])


def test_the_backend_packages_found_are_recorded_with_their_versions(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A GDN point on FlashInfer runs only with the CuTe DSL: which of the optional backends'
    packages a run's env had is in its environment."""
    import importlib.metadata

    def version(dist: str) -> str:
        if dist in ("nvidia-cutlass-dsl", "cupti-python"):
            return {"nvidia-cutlass-dsl": "4.8.1", "cupti-python": "13.0.1"}[dist]
        raise importlib.metadata.PackageNotFoundError(dist)

    monkeypatch.setattr(importlib.metadata, "version", version)
    assert backend_packages.installed() == {"nvidia-cutlass-dsl": "4.8.1",
                                            "cupti-python": "13.0.1"}
    # the worker installs the same backends' packages it records
    from kernelwatch.worker import envs

    assert envs.BACKEND_DEPS is backend_packages.BACKEND_DEPS
