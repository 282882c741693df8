"""The job page's point table, paged, sorted and filtered in the database: a sweep of 100,000
points is browsed 25 rows at a time, and a filter typed under a column header becomes a WHERE
clause rather than a scan in the browser.

Filters arrive in DataTable's syntax (``{status} scontains error && {median_us} > 100``); the
columns are the table's own names (see ``COLUMNS``) plus any kernel parameter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Float, Select, Text, and_, cast, func, select
from sqlalchemy.orm import Session

from kernelwatch.core.models import Point
from kernelwatch.dashboard.queries import param_text
from kernelwatch_harness.catalogue import PARAMS

# table column -> Point column
COLUMNS: dict[str, Any] = {
    "id": Point.id,
    "run": Point.run_id,
    "index": Point.point_index,
    "backend": Point.backend,
    "version": Point.flashinfer_version,
    "gpu": Point.gpu_sku,
    "status": Point.status,
    "median_us": Point.median_us,
    "ci_low_us": Point.ci_low_us,
    "ci_high_us": Point.ci_high_us,
    "cv": Point.cv,
    "tbps": Point.tbps,
    "tflops": Point.tflops,
    "pct_peak_bw": Point.pct_peak_bw,
    "n_samples": Point.n_samples,
    "throttled": Point.throttled,
    "error": Point.error,
}
NUMERIC = {"id", "run", "index", "median_us", "ci_low_us", "ci_high_us", "cv", "tbps",
           "tflops", "pct_peak_bw", "n_samples"}
_OPS = {"=": "eq", "eq": "eq", "!=": "ne", "ne": "ne", "<": "lt", "lt": "lt", "<=": "le",
        "le": "le", ">": "gt", "gt": "gt", ">=": "ge", "ge": "ge", "contains": "contains",
        "datestartswith": "contains"}
_PART = re.compile(r"^\{(?P<col>[^}]+)\}\s+(?P<op>[si]?(?:[a-z]+|[<>!=]=?))\s+(?P<val>.+)$")


class FilterError(ValueError):
    pass


@dataclass(frozen=True)
class Condition:
    column: str
    op: str  # eq ne lt le gt ge contains
    value: str
    case_insensitive: bool = False


def parse_filter(query: str | None) -> list[Condition]:
    out = []
    for part in (query or "").split(" && "):
        part = part.strip()
        if not part:
            continue
        m = _PART.match(part)
        if not m:
            raise FilterError(f"cannot read the filter {part!r}")
        op = m["op"]
        insensitive = op.startswith("i")
        if op[0] in "si" and op[1:] in _OPS:
            op = op[1:]
        if op not in _OPS:
            raise FilterError(f"unknown operator {m['op']!r} in {part!r}")
        value = m["val"].strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'`":
            value = value[1:-1]
        out.append(Condition(m["col"], _OPS[op], value, insensitive))
    return out


def _expr(column: str, numeric: bool) -> ColumnElement[Any]:
    if column in COLUMNS:
        return COLUMNS[column]  # type: ignore[no-any-return]
    if column in PARAMS:
        text = param_text(column)
        return cast(text, Float) if numeric else text
    raise FilterError(f"unknown column {column!r}")


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _numeric_column(column: str) -> bool:
    return column in NUMERIC or (column in PARAMS and PARAMS[column].kind in (int, float))


def condition_expr(c: Condition) -> ColumnElement[bool]:
    numeric = _numeric_column(c.column) and _is_number(c.value) and c.op != "contains"
    expr = _expr(c.column, numeric)
    if c.column == "throttled":
        want = c.value.lower() in ("yes", "true", "1")
        return expr.is_(want) if c.op == "eq" else expr.is_not(want)
    value: Any = float(c.value) if numeric else c.value
    if c.op == "contains":
        target: ColumnElement[Any] = cast(expr, Text)
        if c.case_insensitive:
            return func.lower(target).contains(c.value.lower(), autoescape=True)
        return target.contains(c.value, autoescape=True)
    if not numeric and c.case_insensitive:
        expr, value = func.lower(expr), str(value).lower()
    return {  # type: ignore[no-any-return]
        "eq": expr == value, "ne": expr != value, "lt": expr < value, "le": expr <= value,
        "gt": expr > value, "ge": expr >= value,
    }[c.op]


def page(
    session: Session,
    job_id: int,
    filter_query: str | None,
    sort_by: list[dict[str, str]] | None,
    page_current: int,
    page_size: int,
) -> tuple[list[dict[str, Any]], int]:
    """One page of the job's points (no samples) and the number of points that match."""
    conds = [Point.job_id == job_id, *(condition_expr(c) for c in parse_filter(filter_query))]
    total = int(session.execute(
        select(func.count()).select_from(Point).where(and_(*conds))).scalar() or 0)
    stmt: Select[Any] = select(
        Point.id, Point.run_id, Point.point_index, Point.backend, Point.resolved_backend,
        Point.flashinfer_version, Point.gpu_sku, Point.status, Point.error, Point.params,
        Point.n_samples, Point.median_us, Point.ci_low_us, Point.ci_high_us, Point.cv,
        Point.tbps, Point.tflops, Point.pct_peak_bw, Point.throttled,
    ).where(and_(*conds))
    order: list[Any] = []
    for s in sort_by or []:
        col = s.get("column_id", "")
        try:
            expr = _expr(col, _numeric_column(col))
        except FilterError:
            continue
        order.append(expr.desc().nulls_last() if s.get("direction") == "desc"
                     else expr.asc().nulls_last())
    order += [Point.run_id, Point.point_index, Point.backend]
    stmt = stmt.order_by(*order).offset(max(page_current, 0) * page_size).limit(page_size)
    return [dict(r._mapping) for r in session.execute(stmt)], total
