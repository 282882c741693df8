"""Export one job (runs with their environment, points with every column, every raw sample) to
a plain JSON-able dict, and import such a dict as a new job. Fixtures measured on a GPU machine
travel this way into tests and demos on machines without one.

Import inserts new rows with new ids: ids are local to a database, so links (run -> job,
point -> run, sample -> point) are rebuilt from the nesting, never from the old ids. Runs lose
their node link (the node is not in this database); the node's name is kept in ``node_name``
of the export for the reader.

Files: ``read_file``/``write_file`` keep an export (or any JSON fixture) as compact JSON,
gzip-compressed when the name ends in ``.gz``. ``read_raw`` reads the raw harness messages a
GPU sweep writes (bench/gpu_sweep.py), from which scripts/fixtures/gpu_fixture.py builds jobs.
"""

from __future__ import annotations

import gzip
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, insert, select
from sqlalchemy.orm import Session

from kernelwatch.core.legacy import legacy_identity, legacy_spec
from kernelwatch.core.models import Base, Crosscheck, Job, Node, Point, Run, Sample
from kernelwatch.core.stats import bootstrap_median_ci

FORMAT = "kernelwatch-job/1"

# Columns that are database-local links, rebuilt on import.
_LINKS = {"id", "job_id", "run_id", "node_id", "point_id"}


def _columns(model: type[Base]) -> list[str]:
    return [c.key for c in model.__table__.columns]


def _to_dict(obj: Base) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for col in type(obj).__table__.columns:
        value = getattr(obj, col.key)
        out[col.key] = value.isoformat() if isinstance(value, datetime) else value
    return out


def _from_dict(model: type[Base], data: dict[str, Any]) -> dict[str, Any]:
    """Column values for a new row: known columns only, links dropped, datetimes parsed."""
    out: dict[str, Any] = {}
    for col in model.__table__.columns:
        if col.key in _LINKS or col.key not in data:
            continue
        value = data[col.key]
        if isinstance(col.type, DateTime) and isinstance(value, str):
            value = datetime.fromisoformat(value)
        out[col.key] = value
    return out


def export_job(session: Session, job_id: int) -> dict[str, Any]:
    job = session.get(Job, job_id)
    if job is None:
        raise LookupError(f"job {job_id} not found")
    runs = session.scalars(select(Run).where(Run.job_id == job_id).order_by(Run.id)).all()
    node_names: dict[int, str] = {
        node_id: name
        for node_id, name in session.execute(
            select(Node.id, Node.name).where(Node.id.in_([r.node_id for r in runs if r.node_id]))
        )
    }
    points = session.scalars(
        select(Point).where(Point.job_id == job_id).order_by(Point.id)
    ).all()
    samples: dict[int, list[tuple[int, float, int]]] = {}
    for point_id, iteration, latency, repeat in session.execute(
        select(Sample.point_id, Sample.iteration, Sample.latency_us, Sample.repeat)
        .join(Point, Point.id == Sample.point_id)
        .where(Point.job_id == job_id)
        .order_by(Sample.point_id, Sample.iteration)
    ):
        samples.setdefault(point_id, []).append((iteration, latency, repeat))

    crosschecks = {c.point_id: c for c in session.scalars(
        select(Crosscheck).join(Point, Point.id == Crosscheck.point_id)
        .where(Point.job_id == job_id))}
    by_run: dict[int, list[dict[str, Any]]] = {}
    for p in points:
        row = _to_dict(p)
        if p.id in crosschecks:  # flashinfer_benchmark.py beside the point (crosscheck: true)
            row["crosscheck"] = _to_dict(crosschecks[p.id])
        pairs = samples.get(p.id, [])
        row["samples"] = {
            "iteration": [i for i, _, _ in pairs],
            "latency_us": [v for _, v, _ in pairs],
            "repeat": [r for _, _, r in pairs],
        }
        by_run.setdefault(p.run_id, []).append(row)
    out_runs = []
    for r in runs:
        row = _to_dict(r)
        row["node_name"] = node_names.get(r.node_id) if r.node_id else None
        row["points"] = by_run.get(r.id, [])
        out_runs.append(row)
    return {"format": FORMAT, "job": _to_dict(job), "runs": out_runs}


def import_job(session: Session, data: dict[str, Any]) -> Job:
    """Insert an exported job as a new job (new ids; statistics and raw samples kept as they
    were measured). An export made by an older kernelwatch is brought to the current meaning
    as the database's migrations bring stored points: CIs recomputed from the samples, and the
    legacy values of parameters added since (``core.legacy``). The caller commits."""
    if data.get("format") != FORMAT:
        raise ValueError(f"not a kernelwatch job export (format must be {FORMAT!r})")
    job_values = _from_dict(Job, data["job"])
    # The key belongs to the original submission; a copy must not collide with it.
    job_values["idempotency_key"] = None
    job_values["spec"] = legacy_spec(job_values.get("spec"))
    job = Job(**job_values)
    session.add(job)
    session.flush()
    for run_data in data.get("runs", []):
        run = Run(job_id=job.id, **_from_dict(Run, run_data))
        session.add(run)
        session.flush()
        for point_data in run_data.get("points", []):
            values = _from_dict(Point, point_data)
            legacy_identity(values)
            s = point_data.get("samples") or {}
            iterations, latencies = s.get("iteration", []), s.get("latency_us", [])
            repeats = s.get("repeat") or [0] * len(latencies)  # exports before repeats
            if latencies:
                # The CI as the current method computes it from the samples (the database's
                # migrations recompute stored CIs the same way).
                values["ci_low_us"], values["ci_high_us"] = bootstrap_median_ci(
                    [float(v) for v in latencies], repeats=[int(r) for r in repeats])
            point = Point(run_id=run.id, job_id=job.id, **values)
            session.add(point)
            session.flush()
            rows = [
                {"point_id": point.id, "iteration": int(i), "latency_us": float(v),
                 "repeat": int(r)}
                for i, v, r in zip(iterations, latencies, repeats, strict=True)
            ]
            if rows:
                session.execute(insert(Sample), rows)
            if point_data.get("crosscheck"):
                session.add(Crosscheck(point_id=point.id,
                                       **_from_dict(Crosscheck, point_data["crosscheck"])))
    return job


def read_file(path: Path | str) -> Any:
    """A JSON fixture, gzip-compressed when its name ends in ``.gz``."""
    p = Path(path)
    data = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
    return json.loads(data)


def write_file(path: Path | str, data: Any) -> None:
    """Write ``data`` as compact JSON, gzip-compressed (reproducibly: no name or time in the
    header) when the name ends in ``.gz``."""
    p = Path(path)
    text = (json.dumps(data, separators=(",", ":"), default=str) + "\n").encode()
    p.write_bytes(gzip.compress(text, 9, mtime=0) if p.suffix == ".gz" else text)


def read_raw(paths: list[Path] | list[str]) -> list[dict[str, Any]]:
    """The raw harness messages of a GPU sweep (``raw-<label>.jsonl``: a request line, then
    the harness's env and point messages, then the suite's wall time; repeated per suite and
    run), one entry per (file, suite, run): ``source`` (the file's name), ``meta`` (the
    request line), ``env``, ``points`` and, when the run finished, ``wall_seconds``."""
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
