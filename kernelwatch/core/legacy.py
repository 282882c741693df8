"""Parameters that did not exist when a point was measured.

A kernel parameter added later (``catalogue.LEGACY_VALUES``: the value in effect before it
existed) joins the series identity, so a stored point gains it with its legacy value and the
series key of its new parameters; a stored job's spec names it, so the job's grid stays the
grid it measured. The database's migrations and the import of older exports do the same, here.
The key a point was stored under depends on measurement conditions that are not stored with it
(cold L2, the clock discipline); ``series.rekey`` finds the one that reproduces it, and a point
whose key cannot be reproduced is left as it was: nothing is guessed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from kernelwatch.core.series import rekey
from kernelwatch_harness.catalogue import KERNELS, LEGACY_VALUES, with_legacy_values

BATCH = 500


def legacy_spec(spec: dict[str, Any] | None,
                names: Sequence[str] | None = None) -> dict[str, Any] | None:
    """A job spec stored before some of its kernel's parameters existed, naming their legacy
    values (``names``: those parameters; default every one in ``LEGACY_VALUES``)."""
    if not spec or "kernel" not in spec:
        return spec
    params = dict(spec.get("params") or {})
    legacy = with_legacy_values(str(spec["kernel"]), {k: None for k in params}, names)
    added = {k: [v] for k, v in legacy.items() if k not in params}
    return {**spec, "params": {**params, **added}} if added else spec


def legacy_identity(values: dict[str, Any]) -> None:
    """An exported point's column values (``kernel``, ``params``, ``backend``, ``gpu_sku``,
    ``series_key``) given the legacy values of parameters added since, in place."""
    kernel, params = values.get("kernel"), values.get("params")
    if not kernel or not isinstance(params, dict):
        return
    new = with_legacy_values(str(kernel), params)
    if new == params:
        return
    key = rekey(str(kernel), params, new, str(values.get("backend")), values.get("gpu_sku"),
                str(values.get("series_key")))
    if key is not None:
        values["params"], values["series_key"] = new, key


def _json(value: Any) -> Any:
    # A JSON column read through text() comes back as a string on some backends.
    return json.loads(value) if isinstance(value, str) else value


def _rewrite(
    conn: sa.Connection,
    names: Sequence[str],
    change_params: Callable[[str, dict[str, Any]], dict[str, Any] | None],
    change_spec: Callable[[dict[str, Any]], dict[str, Any]],
) -> None:
    """Every point of the kernels taking ``names`` gets ``change_params``'s parameters (None:
    left alone) and the key that goes with them; every job of those kernels, ``change_spec``'s
    spec."""
    kernels = sorted(k for k, spec in KERNELS.items() if set(names) & set(spec.params))
    meta = sa.MetaData()
    points = sa.Table("points", meta, sa.Column("id", sa.BigInteger),
                      sa.Column("kernel", sa.String), sa.Column("backend", sa.String),
                      sa.Column("gpu_sku", sa.String), sa.Column("params", sa.JSON),
                      sa.Column("series_key", sa.String))
    jobs = sa.Table("jobs", meta, sa.Column("id", sa.BigInteger),
                    sa.Column("kernel", sa.String), sa.Column("spec", sa.JSON))
    todo = []
    for pid, kernel, backend, sku, params, key in conn.execute(
        sa.select(points.c.id, points.c.kernel, points.c.backend, points.c.gpu_sku,
                  points.c.params, points.c.series_key).where(points.c.kernel.in_(kernels))
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
                                  .where(jobs.c.kernel.in_(kernels))).all():
        old_spec = _json(spec) or {}
        new_spec = change_spec(old_spec)
        if new_spec != old_spec:
            conn.execute(sa.update(jobs).where(jobs.c.id == jid).values(spec=new_spec))


def add_legacy_params(conn: sa.Connection, names: Sequence[str]) -> None:
    """A migration's upgrade: stored points and jobs gain ``names`` at their legacy values."""
    _rewrite(conn, names, lambda kernel, params: with_legacy_values(kernel, params, names),
             lambda spec: legacy_spec(spec, names) or spec)


def remove_legacy_params(conn: sa.Connection, names: Sequence[str]) -> None:
    """Its downgrade: points at the legacy values of ``names`` lose them (a point measured at
    another value keeps it: the older schema has no way to say so), and so do jobs' specs."""

    def params_before(kernel: str, params: dict[str, Any]) -> dict[str, Any] | None:
        if any(n in params and params[n] != LEGACY_VALUES[n] for n in names):
            return None
        return {k: v for k, v in params.items() if k not in names}

    def spec_before(spec: dict[str, Any]) -> dict[str, Any]:
        params = dict(spec.get("params") or {})
        if any(params.get(n, [LEGACY_VALUES[n]]) != [LEGACY_VALUES[n]] for n in names):
            return spec
        return {**spec, "params": {k: v for k, v in params.items() if k not in names}}

    _rewrite(conn, names, params_before, spec_before)
