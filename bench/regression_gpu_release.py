"""The release flow on one machine, embedded (SQLite + SQLite broker), for the GPU evidence:
a real worker per GPU, FlashInfer environments built from a wheelhouse, ``release NEW
--previous OLD``, the comparison, the interleaved confirmation, and the notification received
by a local HTTP server. Writes under --out:

    release_flow.json   the notification, the release, each comparison (summary + points),
                        its regressions, and every job (release and confirm) with runs,
                        points and raw samples (kernelwatch.core.fixtures format)
    worker.log          the worker's log

On a GPU node, from the repository root (wheels of FlashInfer and apache-tvm-ffi in .whl/,
kernelwatch's service wheels in .whl/svc/, see scripts/service-wheels.sh),
``scripts/gpu-check release --version NEW`` installs what it needs and runs

    python bench/regression_gpu_release.py --new 0.6.18.post1 --previous 0.5.3 \\
        --wheelhouse .whl --out OUT

Prints the seconds from the trigger to each stage and the notification's text. On a machine
without a GPU the same flow runs on the cpu tag (torch backends only).

release_flow.json is written as soon as the flow ends or times out, before the workers are
stopped (an outer time limit may end this process while a worker finishes its build), and
again once they are. ``--export-only --data-dir DIR --new V`` writes it from a flow's
database left in DIR without running anything.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from kernelwatch.core.notify import local_receiver

ROOT = Path(__file__).resolve().parent.parent


def _stopped(signum: int, frame: Any) -> None:
    raise SystemExit(f"stopped by signal {signum}: writing what the flow has")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new", default="0.6.18.post1")
    ap.add_argument("--previous", default="0.5.3")
    ap.add_argument("--suite", default=str(ROOT / "bench" / "regression_gpu_suite.yaml"))
    ap.add_argument("--wheelhouse", default=str(ROOT / ".whl"))
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/kw-out")))
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--envs-dir", type=Path, default=None,
                    help="the FlashInfer envs and their JIT caches (default: under --data-dir)")
    ap.add_argument("--crosscheck", action="store_true",
                    help="run flashinfer_benchmark.py beside each point of the release's jobs")
    ap.add_argument("--timeout", type=float, default=540.0, help="seconds for the whole flow")
    ap.add_argument("--entries", help="comma-separated names of the suite's entries to run "
                                      "(default: all): a suite measured in parts")
    ap.add_argument("--export-only", action="store_true",
                    help="write release_flow.json from --data-dir's database, run nothing")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.export_only:
        if args.data_dir is None:
            ap.error("--export-only needs --data-dir: the flow's data folder")
        _use_data_dir(args.data_dir)
        _dump(args.out / "release_flow.json", args.new, [])
        print(f"wrote {args.out / 'release_flow.json'} from {args.data_dir}")
        return
    if args.entries:
        args.suite = str(suite_part(Path(args.suite), args.entries.split(","),
                                    args.out / "suite.yaml"))
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="kw-release-"))
    # Stopped from outside (scripts/gpu-check's --limit): leave through the finally below, so
    # the flow is written and the workers are stopped.
    signal.signal(signal.SIGTERM, _stopped)

    t0 = time.monotonic()
    with local_receiver() as (url, received):
        os.environ.update({
            "KERNELWATCH_BROKER_URL": "",
            "KERNELWATCH_WHEELHOUSE": str(Path(args.wheelhouse).resolve()),
            "KERNELWATCH_RELEASE_SUITE": str(Path(args.suite).resolve()),
            "KERNELWATCH_NOTIFY_URL": url,
            "KERNELWATCH_HEARTBEAT_SECONDS": "2",
            "KERNELWATCH_RELEASE_CROSSCHECK": "1" if args.crosscheck else "0",
            # One intra-op thread: a CPU torch backend must not wait on a preempted thread.
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        })
        if args.envs_dir:
            os.environ["KERNELWATCH_ENVS_DIR"] = str(args.envs_dir.resolve())
        from kernelwatch.cli.service import worker_children
        from kernelwatch.core import db
        from kernelwatch.core.migrate import upgrade

        _use_data_dir(data_dir)
        upgrade()
        children = worker_children()
        log = open(args.out / "worker.log", "ab")  # noqa: SIM115 (the workers keep it)
        procs = [subprocess.Popen(c.argv, env={**os.environ, **c.env}, cwd=ROOT, stdout=log,
                                  stderr=subprocess.STDOUT) for c in children]
        try:
            _wait("the workers to register", lambda: _nodes() >= len(children), 120)
            print(f"[{time.monotonic() - t0:5.0f} s] {len(children)} worker(s) registered",
                  flush=True)
            from kernelwatch.core.releases import trigger_release

            with db.session_scope() as session:
                start = trigger_release(session, args.new, previous=args.previous,
                                        source="manual", submitted_by="evidence")
                print(f"[{time.monotonic() - t0:5.0f} s] release {args.new} vs "
                      f"{args.previous}: {start.release.details}", flush=True)
            _wait("the notification", lambda: bool(received), args.timeout,
                  progress=lambda: _progress(args.new, t0))
        finally:
            # first what is stored now, then again once the workers have stopped
            _dump(args.out / "release_flow.json", args.new, received)
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
            _dump(args.out / "release_flow.json", args.new, received)
    print(f"[{time.monotonic() - t0:5.0f} s] wrote {args.out / 'release_flow.json'}")
    if received:
        print(received[0]["text"])


def _use_data_dir(data_dir: Path) -> None:
    """The settings and engine of a flow's embedded database in ``data_dir``."""
    from kernelwatch.core import db
    from kernelwatch.core.settings import get_settings

    os.environ.update({"KERNELWATCH_DATA_DIR": str(data_dir), "KERNELWATCH_DATABASE_URL": ""})
    get_settings.cache_clear()
    db.reset_engine()


def suite_part(suite: Path, names: list[str], dest: Path) -> Path:
    """The suite's entries named (an unknown name is an error naming the entries), written to
    ``dest``."""
    import yaml

    doc = yaml.safe_load(suite.read_text())
    known = [s["name"] for s in doc["specs"]]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise SystemExit(f"--entries: {', '.join(unknown)} not in {suite}; its entries: "
                         f"{', '.join(known)}")
    doc["specs"] = [s for s in doc["specs"] if s["name"] in names]
    dest.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dest


def _nodes() -> int:
    from sqlalchemy import func, select

    from kernelwatch.core import db
    from kernelwatch.core.models import Node

    with db.session_scope() as session:
        return int(session.scalar(select(func.count(Node.id))) or 0)


def _progress(version: str, t0: float) -> str:
    from sqlalchemy import func, select

    from kernelwatch.core import db
    from kernelwatch.core.models import Point, Release, ReleaseTag

    with db.session_scope() as session:
        release = session.scalar(select(Release).where(Release.version == version))
        points = session.scalar(select(func.count(Point.id)))
        tags = {t.tag: str(t.state) for t in session.scalars(
            select(ReleaseTag).where(ReleaseTag.release_id == release.id))} if release else {}
        built = {t: f"built in {p['wall_seconds']:.0f} s" for t, p in
                 ((release.details or {}).get("prebuild") or {}).items()} if release else {}
        return (f"[{time.monotonic() - t0:5.0f} s] release {release.status if release else '?'}"
                f" {tags}{' ' + str(built) if built else ''}, {points} points stored")


def _wait(what: str, ok: Any, timeout: float, progress: Any = None) -> None:
    deadline = time.monotonic() + timeout
    last = 0.0
    while time.monotonic() < deadline:
        if ok():
            return
        if progress and time.monotonic() - last > 15:
            print(progress(), flush=True)
            last = time.monotonic()
        time.sleep(1)
    print(f"timed out waiting for {what}", flush=True)


def _dump(path: Path, version: str, received: list[dict[str, Any]]) -> None:
    from sqlalchemy import select

    from kernelwatch.api.routers.regressions import regression_out
    from kernelwatch.core import db
    from kernelwatch.core.fixtures import export_job, write_file
    from kernelwatch.core.models import Comparison, Job, Regression, Release

    with db.session_scope() as session:
        release = session.scalar(select(Release).where(Release.version == version))
        comparisons = []
        jobs = []
        if release is not None:
            for c in session.scalars(select(Comparison).where(
                    Comparison.release_id == release.id)):
                regs = session.scalars(select(Regression).where(
                    Regression.comparison_id == c.id).order_by(Regression.id))
                comparisons.append({"id": c.id, "gpu_sku": c.gpu_sku,
                                    "baseline": c.baseline_label, "contender": c.contender_label,
                                    "summary": c.summary,
                                    "regressions": [regression_out(r) for r in regs]})
            job_ids = session.scalars(select(Job.id).where(
                Job.release_version == version).order_by(Job.id))
            jobs = [export_job(session, j) for j in job_ids]
        out = {
            "notification": received[0] if received else None,
            "release": None if release is None else {
                "version": release.version, "previous_version": release.previous_version,
                "status": release.status, "details": release.details},
            "comparisons": comparisons,
            "jobs": jobs,
        }
    write_file(path, out)


if __name__ == "__main__":
    main()
