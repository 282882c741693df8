"""Every database read the dashboard makes. Each one is aggregated or filtered in the database
and returns at most a screenful of rows: a page over 100,000 points never pulls them into
Python, and the only query that reads raw samples reads one point's.

Parameters live in the ``points.params`` JSON column. Their values are compared as text
(``CAST(params->>'kv_len' AS TEXT)``) so the same code works on Postgres and on the embedded
SQLite; the option values the pages offer come from the database itself (``combos``), so a
filter always compares like with like.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Text, and_, cast, func, or_, select
from sqlalchemy.orm import Session

from kernelwatch.core.compare import runs as compare_runs_mod
from kernelwatch.core.history import sort_versions
from kernelwatch.core.models import (
    UNSETTLED_REGRESSION_STATES,
    Comparison,
    Crosscheck,
    Job,
    Node,
    Point,
    Regression,
    RegressionState,
    Release,
    ReleaseTag,
    Run,
    Sample,
    TagState,
)
from kernelwatch.core.nodes import heartbeat_age, is_alive
from kernelwatch.core.series import ClockSummary, clock_summary
from kernelwatch_harness.catalogue import FAMILIES, KERNELS, TORCH_BACKENDS

NONE = "none"  # how a NULL value (kv_dtype unset, torch-only run without a version) is shown
COLUMN_DIMS = ("gpu_sku", "flashinfer_version", "backend")
# Combined dimensions (several parameters shown as one axis value, "32/8/128"), as the
# families declare them (e.g. attention's head_config).
GROUPS: dict[str, tuple[str, ...]] = {
    g: members for f in FAMILIES.values() for g, members in f.groups.items()}


def members(dim: str) -> tuple[str, ...]:
    """The parameters a combined dimension stands for (none for a plain one)."""
    return GROUPS.get(dim, ())


def param_text(name: str) -> ColumnElement[Any]:
    """A parameter's value as text, on both Postgres and SQLite."""
    return cast(Point.params[name].as_string(), Text)


def dim_expr(name: str) -> ColumnElement[Any]:
    if name in COLUMN_DIMS:
        return getattr(Point, name)  # type: ignore[no-any-return]
    if name in GROUPS:
        parts = [param_text(m) for m in GROUPS[name]]
        expr = parts[0]
        for part in parts[1:]:
            expr = expr + "/" + part
        return expr
    return param_text(name)


def dims_for(kernel: str) -> list[str]:
    """Every dimension a point of this kernel varies along: columns first, then parameters."""
    return [*COLUMN_DIMS, *KERNELS[kernel].params]


def show(value: Any) -> str:
    return NONE if value is None else str(value)


def sort_values(values: Iterable[str]) -> list[str]:
    """Numbers numerically, then the rest alphabetically (``none`` last)."""

    def key(v: str) -> tuple[int, float, str]:
        if v == NONE:
            return (2, 0.0, v)
        try:
            return (0, float(v), v)
        except ValueError:
            return (1, 0.0, v)

    return sorted(set(values), key=key)


def _match(name: str, value: str) -> ColumnElement[bool]:
    expr = dim_expr(name)
    return expr.is_(None) if value == NONE else expr == value


# ---------------------------------------------------------------------------------------------
# Kernels and their dimension values


def kernels_present(session: Session) -> list[str]:
    """Kernels with stored points, the most measured first (the default view)."""
    rows = session.execute(
        select(Point.kernel, func.count()).group_by(Point.kernel)
        .order_by(func.count().desc(), Point.kernel)).all()
    return [str(k) for k, _ in rows if k in KERNELS]


def _db_text(value: Any, dialect: str) -> str:
    """A JSON value as ``param_text`` renders it in this database (SQLite's JSON_EXTRACT
    gives 1/0 for booleans, Postgres's ->> gives true/false)."""
    if value is None:
        return NONE
    if isinstance(value, bool):
        return ("1" if value else "0") if dialect == "sqlite" else str(value).lower()
    return str(value)


def _mode(counts: dict[str, int]) -> str:
    return max(sorted(counts, key=str), key=lambda v: counts[v])


@dataclass
class Combos:
    """What one kernel's points vary along, read with two small GROUP BYs: the distinct
    (GPU, version, backend) triples, and the distinct parameter documents (a sweep has a few
    thousand at most, however many points it stored: grouping by the whole JSON text is one
    hash aggregate, where extracting each parameter would parse every document 15 times)."""

    kernel: str
    job_id: int | None
    dialect: str
    dims: list[str]
    columns: list[tuple[tuple[str, ...], int]] = field(default_factory=list)
    docs: list[tuple[dict[str, str], int]] = field(default_factory=list)

    def values(self, dim: str) -> list[str]:
        if dim in COLUMN_DIMS:
            i = COLUMN_DIMS.index(dim)
            return sort_values(c[i] for c, _ in self.columns)
        return sort_values(d[dim] for d, _ in self.docs if dim in d)

    def varying(self) -> list[str]:
        return [d for d in self.dims if len(self.values(d)) > 1]

    def settle(self, session: Session, free: Sequence[str], wanted: dict[str, str]
               ) -> dict[str, str]:
        """A value for every dimension not in ``free``: the wanted one where it has data given
        the choices before it, otherwise the value with the most points. GPU, version and
        backend are settled first; the parameters then among the points those leave, so the
        result always matches stored points."""
        chosen: dict[str, str] = {}
        for i, dim in enumerate(COLUMN_DIMS):
            if dim in free:
                continue
            counts: dict[str, int] = defaultdict(int)
            for combo, n in self.columns:
                if all(combo[COLUMN_DIMS.index(d)] == v for d, v in chosen.items()):
                    counts[combo[i]] += n
            if counts:
                chosen[dim] = wanted[dim] if wanted.get(dim) in counts else _mode(counts)
        # Nothing chosen yet (every column dimension free): the documents read by ``combos``.
        docs = (self.docs if not chosen else
                param_docs(session, self.kernel, self.job_id, self.dialect, chosen))
        # The parameters are chosen together: the slice (every fixed parameter at once) with the
        # most points, among those that keep what the URL asked for where it has data. Chosen
        # one at a time, each by its own most common value, they could meet in a slice of one.
        dims = [d for d in self.dims if d not in COLUMN_DIMS and d not in free]
        slices: dict[tuple[str | None, ...], int] = defaultdict(int)
        for doc, n in docs:
            slices[tuple(doc.get(d) for d in dims)] += n
        for i, dim in enumerate(dims):
            asked = wanted.get(dim)
            if asked is not None and any(key[i] == asked for key in slices):
                slices = {k: n for k, n in slices.items() if k[i] == asked}
        if slices:
            best = max(sorted(slices, key=lambda k: tuple(str(v) for v in k)),
                       key=lambda k: slices[k])
            chosen.update({d: v for d, v in zip(dims, best, strict=True) if v is not None})
        return chosen


def param_docs(session: Session, kernel: str, job_id: int | None, dialect: str,
               where: dict[str, str] | None = None) -> list[tuple[dict[str, str], int]]:
    """Distinct parameter documents of a kernel's points (optionally of one job, and at given
    GPU/version/backend), each value rendered as ``param_text`` renders it."""
    doc = cast(Point.params, Text)
    stmt = select(doc, func.count()).where(Point.kernel == kernel).group_by(doc)
    if job_id is not None:
        stmt = stmt.where(Point.job_id == job_id)
    for d, v in (where or {}).items():
        if d in COLUMN_DIMS:
            stmt = stmt.where(_match(d, v))
    out = []
    for text_, n in session.execute(stmt):
        params = json.loads(text_) if isinstance(text_, str) else dict(text_ or {})
        out.append(({k: _db_text(v, dialect) for k, v in params.items()}, int(n)))
    return out


def combos(session: Session, kernel: str, job_id: int | None = None) -> Combos:
    dialect = session.get_bind().dialect.name
    cols = [getattr(Point, d) for d in COLUMN_DIMS]
    stmt = select(*cols, func.count()).where(Point.kernel == kernel).group_by(*cols)
    if job_id is not None:
        stmt = stmt.where(Point.job_id == job_id)
    out = Combos(kernel=kernel, job_id=job_id, dialect=dialect, dims=dims_for(kernel))
    for row in session.execute(stmt):
        out.columns.append((tuple(show(v) for v in row[:-1]), int(row[-1])))
    out.docs = param_docs(session, kernel, job_id, dialect)
    return out


# ---------------------------------------------------------------------------------------------
# Curves


POINT_COLUMNS = (
    Point.id,
    Point.run_id,
    Point.job_id,
    Point.status,
    Point.error,
    Point.backend,
    Point.resolved_backend,
    Point.flashinfer_version,
    Point.gpu_sku,
    Point.n_samples,
    Point.median_us,
    Point.ci_low_us,
    Point.ci_high_us,
    Point.p10_us,
    Point.p90_us,
    Point.cv,
    Point.bytes,
    Point.flops,
    Point.tbps,
    Point.tflops,
    Point.pct_peak_bw,
    Point.pct_peak_flops,
    Point.throttled,
    Point.timing_method,
    Point.max_abs_error,
    Point.jit_seconds,
    Point.params,
)


def curve_points(
    session: Session,
    kernel: str,
    x: str,
    series: str,
    fixed: dict[str, str],
    job_id: int | None = None,
) -> list[dict[str, Any]]:
    """One row per (series value, x value): the most recent point there (a re-run replaces an
    older measurement rather than stacking on it), with its run's environment for the hover."""
    x_expr = dim_expr(x).label("x")
    s_expr = dim_expr(series).label("series")
    conds = [Point.kernel == kernel]
    skip = {x, series, *members(x)}
    for d, v in fixed.items():
        if d in skip:
            continue
        if d == "flashinfer_version" and series == "backend":
            # PyTorch backends do not depend on FlashInfer (their runs often carry no
            # version): they stay on a chart of backends whatever version is chosen.
            conds.append(or_(_match(d, v), Point.backend.in_(TORCH_BACKENDS)))
        else:
            conds.append(_match(d, v))
    if job_id is not None:
        conds.append(Point.job_id == job_id)
    rank = func.row_number().over(
        partition_by=(dim_expr(series), dim_expr(x)), order_by=Point.id.desc()
    ).label("rank")
    inner = select(*POINT_COLUMNS, x_expr, s_expr, rank).where(and_(*conds)).subquery()
    stmt = (
        select(inner, Run.environment, Run.gpu_name,
               Crosscheck.median_us.label("official_median_us"),
               Crosscheck.diff_pct.label("official_diff_pct"),
               Crosscheck.agrees.label("official_agrees"),
               Crosscheck.causes.label("official_causes"))
        .join(Run, Run.id == inner.c.run_id)
        .outerjoin(Crosscheck, and_(Crosscheck.point_id == inner.c.id,
                                    Crosscheck.status == "ok"))
        .where(inner.c.rank == 1)
        .order_by(inner.c.series, inner.c.x)
    )
    rows = [dict(r._mapping) for r in session.execute(stmt)]
    for r in rows:
        r["x"] = show(r["x"])
        r["series"] = show(r["series"])
        r.pop("rank", None)
    return rows


# ---------------------------------------------------------------------------------------------
# Overview


def live_nodes(session: Session, now: datetime | None = None) -> list[dict[str, Any]]:
    """Every node, live or stale (core.nodes decides)."""
    now = now or datetime.now(UTC)
    out = []
    for n in session.execute(select(Node).order_by(Node.name)).scalars():
        age = heartbeat_age(n, now).total_seconds()
        out.append({
            "name": n.name,
            "gpu": n.gpu_name or "cpu",
            "sku": n.gpu_sku or "cpu",
            "tags": ", ".join(str(t) for t in n.tags or []),
            "heartbeat_age_s": round(age, 1),
            "state": "live" if is_alive(n, now) else "stale",
            "versions_ready": ", ".join(str(v) for v in n.versions_ready or []) or "-",
            "copy_bw_tbps": n.copy_bandwidth_tbps,
        })
    return out


def point_counts_by_job(session: Session, job_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """Stored points per job and status: one grouped query for a whole table of jobs."""
    if not job_ids:
        return {}
    rows = session.execute(
        select(Point.job_id, Point.status, func.count())
        .where(Point.job_id.in_(job_ids))
        .group_by(Point.job_id, Point.status)
    ).all()
    out: dict[int, dict[str, int]] = defaultdict(dict)
    for job_id, status, n in rows:
        out[int(job_id)][str(status)] = int(n)
    return out


def recent_jobs(session: Session, limit: int = 15) -> list[dict[str, Any]]:
    jobs = session.execute(select(Job).order_by(Job.id.desc()).limit(limit)).scalars().all()
    counts = point_counts_by_job(session, [j.id for j in jobs])
    out = []
    for j in jobs:
        c = counts.get(j.id, {})
        done = sum(c.values())
        out.append({
            "id": j.id,
            "name": j.name,
            "kernel": j.kernel,
            "status": j.status,
            "source": j.source,
            "points": f"{done}/{j.total_points}",
            "progress_pct": round(100.0 * done / j.total_points, 1) if j.total_points else 0.0,
            "errors": c.get("error", 0),
            "created": j.created_at.strftime("%Y-%m-%d %H:%M"),
        })
    return out


def latest_releases(session: Session, limit: int = 10) -> list[dict[str, Any]]:
    """The latest releases, one row per GPU tag, with a verdict from the release flow's
    progress (its ``ReleaseTag`` rows, see core/releases.py) and the confirmation
    states of its comparison's regressions (one grouped query for all of them)."""
    releases = session.execute(
        select(Release).order_by(Release.id.desc()).limit(limit)).scalars().all()
    ids = [r.id for r in releases]
    # Only the columns the table needs: a comparison's summary holds its whole result.
    comps: dict[int, Any] = {}
    states: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    tags_of: dict[int, dict[str, dict[str, Any]]] = defaultdict(dict)
    if ids:
        for t in session.execute(select(ReleaseTag).where(ReleaseTag.release_id.in_(ids))
                                 ).scalars():
            tags_of[t.release_id][t.tag] = t.as_dict()
        for c in session.execute(
                select(Comparison.id, Comparison.release_id, Comparison.gpu_sku,
                       Comparison.baseline_run_ids, Comparison.contender_run_ids)
                .where(Comparison.release_id.in_(ids))).all():
            comps[c.id] = c
        for comp_id, state, n in session.execute(
            select(Regression.comparison_id, Regression.state, func.count())
            .where(Regression.comparison_id.in_(list(comps) or [-1]))
            .group_by(Regression.comparison_id, Regression.state)
        ).all():
            states[int(comp_id)][str(state)] = int(n)
    out = []
    for r in releases:
        tags: dict[str, Any] = dict(tags_of.get(r.id, {}))
        # Comparisons of this release not named by any tag (stored by hand) still show.
        named = {t.get("comparison_id") for t in tags.values() if isinstance(t, dict)}
        for c in comps.values():
            if c.release_id == r.id and c.id not in named:
                tags[c.gpu_sku or "cpu"] = {"state": TagState.done, "comparison_id": c.id}
        for tag, info in sorted(tags.items()) or [("-", {})]:
            info = info if isinstance(info, dict) else {}
            comp = comps.get(int(info.get("comparison_id") or 0))
            out.append({
                "version": r.version,
                "previous": r.previous_version or "-",
                "gpu": tag,
                "status": str(r.status),
                "verdict": release_verdict(info, states.get(comp.id, {}) if comp else {}),
                "compare_link": compare_link(comp) if comp else "",
            })
    return out


def release_verdict(info: dict[str, Any], states: dict[str, int]) -> str:
    """A tag's outcome in words, from its progress and its regressions' states (counts)."""
    state = info.get("state", TagState.benchmarking)
    if state == TagState.no_baseline:
        return f"no baseline ({info.get('message') or 'nothing to compare with'})"
    if state == TagState.benchmarking and not states:
        return "benchmarking"
    confirmed = states.get(RegressionState.confirmed, 0)
    pending = sum(states.get(s, 0) for s in UNSETTLED_REGRESSION_STATES)
    not_reproduced = states.get(RegressionState.not_reproduced, 0)
    failed = states.get(RegressionState.confirm_failed, 0)
    parts = []
    if confirmed:
        parts.append(f"{confirmed} regression(s) confirmed")
    if pending:
        parts.append(f"{pending} suspected, confirming")
    if not_reproduced:
        parts.append(f"{not_reproduced} not reproduced")
    if failed:
        parts.append(f"{failed} could not be confirmed")
    return "; ".join(parts) or "no regressions"


def compare_link(comp: Any) -> str:
    """The compare page of a comparison (anything with its two run-id lists)."""
    b = ",".join(str(i) for i in comp.baseline_run_ids)
    c = ",".join(str(i) for i in comp.contender_run_ids)
    return f"/compare?baseline={b}&contender={c}"


# ---------------------------------------------------------------------------------------------
# Runs (for the compare and job pages)


def run_label(run: Run, job_name: str | None = None) -> str:
    ver = run.flashinfer_version or "torch"
    name = f" {job_name}" if job_name else ""
    return f"run {run.id}:{name} {ver} on {run.gpu_sku or run.target} ({run.status})"


def recent_runs(session: Session, limit: int = 200) -> list[dict[str, Any]]:
    rows = session.execute(
        select(Run, Job.name).join(Job, Job.id == Run.job_id).order_by(Run.id.desc()).limit(limit)
    ).all()
    return [{"label": run_label(r, name), "value": str(r.id)} for r, name in rows]


def runs_by_ids(session: Session, ids: Sequence[int]) -> list[Run]:
    if not ids:
        return []
    return list(session.execute(select(Run).where(Run.id.in_(ids)).order_by(Run.id)).scalars())


def versions_on_gpu(session: Session) -> dict[str, list[str]]:
    """FlashInfer versions measured on each GPU SKU (to compare two releases on one GPU)."""
    rows = session.execute(
        select(Run.gpu_sku, Run.flashinfer_version)
        .where(Run.flashinfer_version.is_not(None))
        .group_by(Run.gpu_sku, Run.flashinfer_version)
    ).all()
    out: dict[str, list[str]] = defaultdict(list)
    for sku, ver in rows:
        out[show(sku)].append(str(ver))
    return {k: sort_versions(v) for k, v in out.items()}


def release_pair_runs(session: Session, gpu_sku: str, baseline_version: str,
                      contender_version: str) -> tuple[list[int], list[int]]:
    """``core.compare.runs.release_pair_runs`` for the page's GPU choice (``NONE``: CPU)."""
    return compare_runs_mod.release_pair_runs(
        session, None if gpu_sku == NONE else gpu_sku, baseline_version, contender_version)


def _same_runs(ids: Sequence[Any], want: Sequence[int]) -> bool:
    return sorted(int(i) for i in ids) == sorted(want)


def stored_comparisons(session: Session, baseline: Sequence[int], contender: Sequence[int]
                       ) -> list[Comparison]:
    """Stored comparisons of exactly these runs, newest first. Run ids live in JSON lists
    (no portable equality in SQL), so the run-id columns of the newest 2,000 comparisons are
    matched here; only the matches' summaries (a full result each) are loaded."""
    rows = session.execute(
        select(Comparison.id, Comparison.baseline_run_ids, Comparison.contender_run_ids)
        .order_by(Comparison.id.desc()).limit(2000)).all()
    ids = [cid for cid, b, c in rows if _same_runs(b, baseline) and _same_runs(c, contender)]
    if not ids:
        return []
    return list(session.execute(
        select(Comparison).where(Comparison.id.in_(ids)).order_by(Comparison.id.desc())
    ).scalars())


def newest_point_time(session: Session, run_ids: Sequence[int]) -> datetime | None:
    return session.execute(
        select(func.max(Point.created_at)).where(Point.run_id.in_(list(run_ids)))).scalar()


def regressions_for_runs(
    session: Session, baseline: Sequence[int], contender: Sequence[int]
) -> list[Regression]:
    """Regressions recorded by stored comparisons of exactly these runs (their confirmation
    state lives there, not in a freshly computed comparison)."""
    comp_ids = [c.id for c in stored_comparisons(session, baseline, contender)]
    if not comp_ids:
        return []
    return list(session.execute(
        select(Regression).where(Regression.comparison_id.in_(comp_ids))
        .order_by(Regression.ratio.desc())
    ).scalars())


# ---------------------------------------------------------------------------------------------
# Job page


def job_with_runs(session: Session, job_id: int) -> tuple[Job | None, list[Run]]:
    job = session.get(Job, job_id)
    if job is None:
        return None, []
    runs = list(session.execute(
        select(Run).where(Run.job_id == job_id).order_by(Run.id)).scalars())
    return job, runs


def first_ok_point(session: Session, job_id: int) -> int | None:
    value = session.execute(
        select(func.min(Point.id)).where(Point.job_id == job_id, Point.status == "ok")).scalar()
    return int(value) if value is not None else None


def point_samples(session: Session, point_id: int) -> list[tuple[float, int]]:
    """One point's raw samples with their repeat, in iteration order (the only query that
    reads samples)."""
    return [(float(v), int(r)) for v, r in session.execute(
        select(Sample.latency_us, Sample.repeat)
        .where(Sample.point_id == point_id).order_by(Sample.iteration)
    )]


def point_clock(session: Session, point_id: int) -> ClockSummary | None:
    """The clock a point's samples were kept at, from its stored telemetry."""
    return clock_summary(session.scalar(select(Point.telemetry).where(Point.id == point_id)))


# ---------------------------------------------------------------------------------------------
# Roofline


def roofline_points(
    session: Session, kernel: str, gpu_sku: str, fixed: dict[str, str], limit: int = 2000
) -> list[dict[str, Any]]:
    """Measured points of one kernel on one SKU with their arithmetic intensity (FLOPs/byte)
    and achieved TFLOP/s; the latest point per series (a re-run replaces older ones)."""
    conds = [Point.kernel == kernel, Point.status == "ok", Point.tflops.is_not(None),
             Point.bytes > 0, _match("gpu_sku", gpu_sku)]
    conds += [_match(d, v) for d, v in fixed.items() if d != "gpu_sku"]
    rank = func.row_number().over(
        partition_by=(Point.series_key, Point.flashinfer_version), order_by=Point.id.desc()
    ).label("rank")
    inner = select(
        Point.id, Point.backend, Point.flashinfer_version, Point.params, Point.flops,
        Point.bytes, Point.tflops, Point.tbps, Point.median_us, rank,
        (Point.flops / Point.bytes).label("intensity"),
    ).where(and_(*conds)).subquery()
    stmt = select(inner).where(inner.c.rank == 1).order_by(inner.c.intensity).limit(limit)
    return [dict(r._mapping) for r in session.execute(stmt)]


def measured_copy_bandwidth(session: Session, gpu_sku: str) -> float | None:
    """The best copy bandwidth a worker measured on this SKU (TB/s), if any."""
    sku_cond = Node.gpu_sku.is_(None) if gpu_sku == NONE else Node.gpu_sku == gpu_sku
    value = session.execute(
        select(func.max(Node.copy_bandwidth_tbps)).where(sku_cond)).scalar()
    return float(value) if value is not None else None


# ---------------------------------------------------------------------------------------------
# Speedup vs PyTorch


SPEEDUP_BACKENDS = tuple(sorted(TORCH_BACKENDS))  # torch-math, then torch-sdpa


def speedup_rows(
    session: Session, gpu_sku: str, version: str | None, kernels: Sequence[str]
) -> list[dict[str, Any]]:
    """Per scenario (kernel + parameters): median latency of each backend, the latest
    measurement each. Torch backends are matched whatever FlashInfer version their run carried
    (they do not depend on it); FlashInfer backends on ``version``."""
    torch_cond = Point.backend.in_(SPEEDUP_BACKENDS)
    fi_cond: ColumnElement[bool] = ~Point.backend.in_(SPEEDUP_BACKENDS)
    if version and version != NONE:
        fi_cond = and_(fi_cond, Point.flashinfer_version == version)
    # Parameters without the backend: the scenario. JSON has no equality on Postgres, so the
    # scenario is identified by the text of the JSON document (written by one code path).
    scenario = cast(Point.params, Text).label("scenario")
    rank = func.row_number().over(
        partition_by=(cast(Point.params, Text), Point.kernel, Point.backend),
        order_by=Point.id.desc(),
    ).label("rank")
    inner = select(
        Point.kernel, Point.backend, Point.params, Point.status, Point.median_us,
        Point.ci_low_us, Point.ci_high_us, scenario, rank,
    ).where(
        Point.kernel.in_(list(kernels)), _match("gpu_sku", gpu_sku), or_(torch_cond, fi_cond)
    ).subquery()
    stmt = select(inner).where(inner.c.rank == 1)
    grouped: dict[tuple[str, str], dict[str, Any]] = {}
    for r in session.execute(stmt):
        key = (r.kernel, r.scenario)
        row = grouped.setdefault(key, {"kernel": r.kernel, "params": r.params, "backends": {}})
        row["backends"][r.backend] = {
            "status": r.status, "median_us": r.median_us,
            "ci_low_us": r.ci_low_us, "ci_high_us": r.ci_high_us,
        }
    return list(grouped.values())


def speedup_choices(session: Session) -> dict[str, list[str]]:
    """GPU SKUs and FlashInfer versions that have measured points."""
    skus = session.execute(select(Point.gpu_sku).group_by(Point.gpu_sku)).scalars().all()
    vers = session.execute(
        select(Point.flashinfer_version).where(Point.flashinfer_version.is_not(None))
        .group_by(Point.flashinfer_version)).scalars().all()
    return {"gpu": sort_values(show(s) for s in skus),
            "version": sort_versions([str(v) for v in vers])}


# ---------------------------------------------------------------------------------------------
# History: a kernel's series across FlashInfer versions


@dataclass(frozen=True)
class SeriesRef:
    """One series in a slice of a kernel's parameters."""

    series_key: str
    gpu_sku: str
    backend: str
    points: int


def slice_series(session: Session, kernel: str, fixed: dict[str, str], gpus: Sequence[str],
                 backends: Sequence[str]) -> list[SeriesRef]:
    """Every series of ``kernel`` whose parameters match ``fixed`` (compared as
    ``curve_points`` compares them), on the given GPUs and backends (none given: all), by GPU
    then backend. One GROUP BY: a series' points are read later, by its key."""
    conds = [Point.kernel == kernel]
    conds += [_match(d, v) for d, v in fixed.items() if d not in COLUMN_DIMS]
    if gpus:
        conds.append(or_(*(_match("gpu_sku", g) for g in gpus)))
    if backends:
        conds.append(Point.backend.in_(list(backends)))
    rows = session.execute(
        select(Point.series_key, Point.gpu_sku, Point.backend, func.count())
        .where(and_(*conds))
        .group_by(Point.series_key, Point.gpu_sku, Point.backend)
        .order_by(Point.gpu_sku, Point.backend, Point.series_key)
    ).all()
    return [SeriesRef(str(k), show(g), str(b), int(n)) for k, g, b, n in rows]


@dataclass(frozen=True)
class SeriesOrigin:
    """What a series key stands for, from one of its points: where a link from a point lands."""

    kernel: str
    backend: str
    gpu_sku: str
    params: dict[str, str]  # rendered as ``param_text`` renders them (selector values)


def series_origin(session: Session, series_key: str) -> SeriesOrigin | None:
    row = session.execute(
        select(Point.kernel, Point.backend, Point.gpu_sku, Point.params)
        .where(Point.series_key == series_key).order_by(Point.id.desc()).limit(1)).first()
    if row is None:
        return None
    dialect = session.get_bind().dialect.name
    return SeriesOrigin(str(row.kernel), str(row.backend), show(row.gpu_sku),
                        {k: _db_text(v, dialect) for k, v in dict(row.params or {}).items()})


def history_link(session: Session, point_id: int) -> str | None:
    """The history page of a point's series (the link from a curve's point or a job's row)."""
    row = session.execute(select(Point.series_key, Point.gpu_sku)
                          .where(Point.id == point_id)).first()
    return f"/history?series={row.series_key}&gpu={show(row.gpu_sku)}" if row else None


def series_versions(session: Session, series_key: str) -> list[str]:
    """The FlashInfer versions a series has points at, oldest first."""
    vers = session.execute(
        select(Point.flashinfer_version).where(Point.series_key == series_key,
                                               Point.flashinfer_version.is_not(None))
        .group_by(Point.flashinfer_version)).scalars().all()
    return sort_versions([str(v) for v in vers])


def series_points(session: Session, series_key: str, version: str, limit: int = 50
                  ) -> list[dict[str, Any]]:
    """The points of one series at one FlashInfer version, newest first (what a click on the
    history chart lists)."""
    stmt = (select(*POINT_COLUMNS, Point.created_at, Run.gpu_name)
            .join(Run, Run.id == Point.run_id)
            .where(Point.series_key == series_key, Point.flashinfer_version == version)
            .order_by(Point.id.desc()).limit(limit))
    return [dict(r._mapping) for r in session.execute(stmt)]


def release_versions(session: Session) -> dict[str, tuple[str | None, str]]:
    """Every release the release flow recorded: version -> (previous version, status), newest
    version first."""
    rows = session.execute(select(Release.version, Release.previous_version, Release.status)
                           ).all()
    by_version = {str(v): (p, str(s)) for v, p, s in rows}
    return {v: by_version[v] for v in reversed(sort_versions(list(by_version)))}


# ---------------------------------------------------------------------------------------------
# Release page


@dataclass
class ReleaseDetail:
    """Everything the release page shows, read in a handful of queries: the release flow's
    own answer (``core.releases.release_response``: verdict, per-tag progress, jobs), the jobs
    with their timings and stored points, and each tag's stored comparison with its
    regressions (their confirmation state lives there)."""

    release: Release
    response: dict[str, Any]
    tags: list[ReleaseTag]
    jobs: list[Job]
    points_by_job: dict[int, dict[str, int]]
    comparisons: dict[int, Comparison]
    regressions: dict[int, list[Regression]]  # by comparison id, the worst first


def release_detail(session: Session, version: str) -> ReleaseDetail | None:
    from kernelwatch.core import releases as core_releases  # the release flow: heavy imports

    release = core_releases.get_release(session, version)
    if release is None:
        return None
    tags = core_releases.release_tag_rows(session, release)
    jobs = core_releases.release_jobs(session, release)
    comp_ids = [t.comparison_id for t in tags if t.comparison_id]
    # Comparisons stored by hand for this release (no tag names them) are shown too.
    comparisons = {c.id: c for c in session.execute(
        select(Comparison).where(or_(Comparison.id.in_(comp_ids or [-1]),
                                     Comparison.release_id == release.id))
        .order_by(Comparison.id)).scalars()}
    regressions: dict[int, list[Regression]] = defaultdict(list)
    for r in session.execute(select(Regression).where(
            Regression.comparison_id.in_(list(comparisons) or [-1]))
            .order_by(Regression.ratio.desc())).scalars():
        regressions[r.comparison_id].append(r)
    return ReleaseDetail(
        release=release, response=core_releases.release_response(session, release),
        tags=tags, jobs=jobs,
        points_by_job=point_counts_by_job(session, [j.id for j in jobs]),
        comparisons=comparisons, regressions=dict(regressions))
