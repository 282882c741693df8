"""``kernelwatch worker``'s plan: one Celery process per GPU, pinned to it, consuming its tags'
queues and its node queue; one CPU worker without GPUs. And the supervisor's stop."""

from __future__ import annotations

import signal
import sys
import time

from kernelwatch.cli.service import plan_workers
from kernelwatch.cli.supervisor import Child, Supervisor
from kernelwatch.core.broker import queue_for_node, queue_for_tag
from kernelwatch.core.settings import Settings
from kernelwatch.worker.gpu import GpuInfo
from kernelwatch.worker.node import NODE_ENV, NodeIdentity


def _arg(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_one_pinned_worker_per_gpu(kw_env: Settings) -> None:
    gpus = [GpuInfo(0, "NVIDIA H200", (9, 0), 141 << 30, "GPU-aaa"),
            GpuInfo(1, "NVIDIA H200", (9, 0), 141 << 30, "GPU-bbb")]
    children = plan_workers(gpus, "nightly", "box")
    assert len(children) == 2
    for child, gpu in zip(children, gpus, strict=True):
        assert child.env["CUDA_VISIBLE_DEVICES"] == gpu.uuid  # by UUID, not NVML index
        assert child.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
        ident = NodeIdentity.from_env(child.env[NODE_ENV])
        assert ident.name == f"box:gpu{gpu.index}" and ident.gpu_sku == "h200"
        assert ident.tags == ["hopper", "h200", "nightly"]
        queues = _arg(child.argv, "--queues").split(",")
        assert queues == [queue_for_tag(t) for t in ("hopper", "h200", "nightly")] + [
            queue_for_node(ident.name)]
        assert _arg(child.argv, "--pool") == "solo" and _arg(child.argv, "--concurrency") == "1"
        assert child.restart


def test_no_gpu_means_one_cpu_worker(kw_env: Settings) -> None:
    (child,) = plan_workers([], "", "box")
    assert "CUDA_VISIBLE_DEVICES" not in child.env
    assert _arg(child.argv, "--queues").split(",") == [queue_for_tag("cpu"),
                                                       queue_for_node("box:cpu")]


def test_supervisor_reports_a_dead_child_and_stops_the_rest() -> None:
    sleeper = Child("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"])
    dying = Child("dying", [sys.executable, "-c", "raise SystemExit(3)"])
    said: list[str] = []
    t0 = time.monotonic()
    code = Supervisor([sleeper, dying], grace=5, echo=said.append).run()
    assert code == 3
    assert "kernelwatch: dying exited with code 3" in said
    assert sleeper.proc is not None and sleeper.proc.returncode == -signal.SIGTERM
    assert time.monotonic() - t0 < 20


def test_supervisor_restarts_a_dead_worker() -> None:
    flaky = Child("flaky", [sys.executable, "-c", "raise SystemExit(1)"], restart=True)
    said: list[str] = []
    code = Supervisor([flaky], grace=5, echo=said.append).run()
    assert said.count("kernelwatch: restarting flaky") == 5  # then it gives up
    assert any("giving up" in line for line in said) and code == 1
