"""points.params: use_cuda_graph, as the points stored before it were measured

The batch wrappers' CUDA-graph plan mode became a parameter (use_cuda_graph, default true).
Points stored before were measured with wrappers built without it: they get the parameter's
legacy value (false) and the series key of those parameters, found by reproducing each stored
key (the measurement conditions that made it are not stored); a point whose key cannot be
reproduced is left as it was. Jobs' specs name the value too, so a job's grid (what a resumed
or redriven run measures) stays the grid it measured. Downgrade removes both.

Create Date: 2026-12-04 23:15:00
"""
import json
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic import op

from kernelwatch.core.fixtures import legacy_spec
from kernelwatch.core.series import rekey
from kernelwatch_harness.catalogue import KERNELS, LEGACY_VALUES, with_legacy_values

revision: str = "0006_points_plan_mode"
down_revision: str | None = "0005_point_ci_log_scale"

BATCH = 500
PARAM = "use_cuda_graph"
_KERNELS = sorted(k for k, spec in KERNELS.items() if PARAM in spec.params)


def _json(value: Any) -> Any:
    # A JSON column read through text() comes back as a string on some backends.
    return json.loads(value) if isinstance(value, str) else value


def _tables() -> tuple[sa.Table, sa.Table]:
    meta = sa.MetaData()
    points = sa.Table("points", meta, sa.Column("id", sa.BigInteger),
                      sa.Column("kernel", sa.String), sa.Column("backend", sa.String),
                      sa.Column("gpu_sku", sa.String), sa.Column("params", sa.JSON),
                      sa.Column("series_key", sa.String))
    jobs = sa.Table("jobs", meta, sa.Column("id", sa.BigInteger),
                    sa.Column("kernel", sa.String), sa.Column("spec", sa.JSON))
    return points, jobs


def _rewrite(
    change_params: Callable[[str, dict[str, Any]], dict[str, Any] | None],
    change_spec: Callable[[dict[str, Any]], dict[str, Any]],
) -> None:
    """Every point of the kernels with the parameter gets ``change_params``'s parameters (None:
    left alone) and the key that goes with them; every job of those kernels, ``change_spec``'s
    spec. A point whose stored key cannot be reproduced is left as it was."""
    conn = op.get_bind()
    points, jobs = _tables()
    todo = []
    for pid, kernel, backend, sku, params, key in conn.execute(
        sa.select(points.c.id, points.c.kernel, points.c.backend, points.c.gpu_sku,
                  points.c.params, points.c.series_key).where(points.c.kernel.in_(_KERNELS))
    ):
        old = _json(params) or {}
        new = change_params(kernel, old)
        if new is None or new == old:
            continue
        new_key = rekey(kernel, old, new, backend, sku, key)
        if new_key is not None:
            todo.append({"pid": pid, "p": new, "k": new_key})
    stmt = (sa.update(points).where(points.c.id == sa.bindparam("pid"))
            .values(params=sa.bindparam("p"), series_key=sa.bindparam("k")))
    for i in range(0, len(todo), BATCH):
        conn.execute(stmt, todo[i : i + BATCH])
    for jid, spec in conn.execute(sa.select(jobs.c.id, jobs.c.spec)
                                  .where(jobs.c.kernel.in_(_KERNELS))).all():
        old_spec = _json(spec) or {}
        new_spec = change_spec(old_spec)
        if new_spec != old_spec:
            conn.execute(sa.update(jobs).where(jobs.c.id == jid).values(spec=new_spec))


def upgrade() -> None:
    _rewrite(with_legacy_values, lambda spec: legacy_spec(spec) or spec)


def downgrade() -> None:
    legacy = LEGACY_VALUES[PARAM]

    def params_of_0005(kernel: str, params: dict[str, Any]) -> dict[str, Any] | None:
        if params.get(PARAM) is not legacy:
            return None  # measured with the plan mode: 0005's schema has no way to say so
        return {k: v for k, v in params.items() if k != PARAM}

    def spec_of_0005(spec: dict[str, Any]) -> dict[str, Any]:
        params = dict(spec.get("params") or {})
        if params.get(PARAM) != [legacy]:
            return spec
        params.pop(PARAM)
        return {**spec, "params": params}

    _rewrite(params_of_0005, spec_of_0005)
