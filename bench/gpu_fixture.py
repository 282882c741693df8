"""Turn the raw harness messages of a GPU evidence run (``raw-*.jsonl`` written by
bench/gpu_sweep.py on the GPU machine) into kernelwatch job exports that ``core.fixtures``
imports: one job per suite (kernel), one run per (FlashInfer version or torch, repetition),
each point stored through ``core.results.store_point`` and each run's environment through
``worker.tasks.store_environment``, exactly as a worker stores them. Nothing is typed in:
every number comes from the raw files.

    python bench/gpu_fixture.py --out tests/fixtures/gpu tests/fixtures/gpu/raw/*.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def read_raw(paths: list[str]) -> list[dict[str, Any]]:
    """One entry per (file, suite, run): the request, the env message and the points."""
    runs: list[dict[str, Any]] = []
    for path in paths:
        cur: dict[str, Any] | None = None
        for line in Path(path).read_text().splitlines():
            msg = json.loads(line)
            kind = msg.get("type")
            if kind == "request":
                cur = {"source": Path(path).name, "meta": msg, "env": None, "points": []}
                runs.append(cur)
            elif cur is not None and kind == "env":
                cur["env"] = msg
            elif cur is not None and kind == "point":
                cur["points"].append(msg)
            elif cur is not None and kind == "wall":
                cur["wall_seconds"] = msg["wall_seconds"]
    return runs


def build(paths: list[str], out: Path, target: str) -> list[Path]:
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from kernelwatch.core.fixtures import export_job
    from kernelwatch.core.migrate import upgrade
    from kernelwatch.core.models import Job, JobStatus, Run
    from kernelwatch.core.results import store_point
    from kernelwatch.worker.tasks import store_environment

    runs = read_raw(paths)
    by_suite: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by_suite.setdefault(r["meta"]["suite"], []).append(r)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/fixture.sqlite"
        upgrade(url)
        engine = create_engine(url)
        with Session(engine) as session:
            for suite, suite_runs in sorted(by_suite.items()):
                request = suite_runs[0]["meta"]["request"]
                versions = sorted(
                    {
                        r["meta"]["flashinfer_version"]
                        for r in suite_runs
                        if r["meta"]["flashinfer_version"]
                    }
                )
                backends = sorted({b for r in suite_runs for b in r["meta"]["request"]["backends"]})
                spec = {
                    "name": f"gpu-evidence-{suite}",
                    "kernel": request["kernel"],
                    "backends": backends,
                    "flashinfer_versions": versions,
                    "targets": [target],
                    "params": swept_params(request["points"]),
                    "timing": request["timing"],
                }
                npoints = sum(len(r["points"]) for r in suite_runs)
                job = Job(
                    name=spec["name"],
                    kernel=request["kernel"],
                    spec=spec,
                    status=JobStatus.succeeded,
                    source="cli",
                    submitted_by="bench/gpu_sweep.py",
                    total_points=npoints,
                    message="GPU evidence run; raw: "
                    + ", ".join(sorted({r["source"] for r in suite_runs})),
                )
                session.add(job)
                session.flush()
                for r in suite_runs:
                    meta = r["meta"]
                    run = Run(
                        job_id=job.id,
                        target=target,
                        queue=f"kw.{target}",
                        flashinfer_version=meta["flashinfer_version"],
                        point_indices=[p["point_index"] for p in meta["request"]["points"]],
                        status=JobStatus.succeeded,
                        message=f"{r['source']} run {meta['run']}; sweep wall "
                        f"{r.get('wall_seconds', 0):.1f} s",
                    )
                    session.add(run)
                    session.flush()
                    if r["env"] is not None:
                        store_environment(run, r["env"])
                    params = {p["point_index"]: p["params"] for p in meta["request"]["points"]}
                    for msg in r["points"]:
                        store_point(
                            session,
                            run,
                            request["kernel"],
                            params[msg["point_index"]],
                            msg,
                            bool(request["timing"].get("cold_l2", True)),
                        )
                session.flush()
                data = export_job(session, job.id)
                path = out / f"{spec['name']}.json"
                path.write_text(json.dumps(data, indent=None, separators=(",", ":")) + "\n")
                written.append(path)
            session.rollback()
        engine.dispose()
    return written


def swept_params(points: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The spec's params: every parameter with the values it takes across the grid."""
    values: dict[str, list[Any]] = {}
    for p in points:
        for k, v in p["params"].items():
            if v not in values.setdefault(k, []):
                values[k].append(v)
    return values


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("raw", nargs="+")
    ap.add_argument("--out", default=str(REPO / "tests" / "fixtures" / "gpu"))
    ap.add_argument("--target", default="h200")
    args = ap.parse_args()
    for path in build(args.raw, Path(args.out), args.target):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
