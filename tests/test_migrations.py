"""Alembic builds the schema (never create_all): upgrade head on a fresh Postgres database and a
fresh SQLite file, and the models match what the migrations build (no autogenerate diff)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, MetaData, inspect, select, text, update
from sqlalchemy.orm import Session

from kernelwatch.core.db import make_engine
from kernelwatch.core.migrate import alembic_config, upgrade
from kernelwatch.core.models import Base, Job, Point, Release, ReleaseTag, Run, TagState
from kernelwatch.core.results import store_point
from kernelwatch.core.stats import summarize
from kernelwatch_harness.catalogue import complete_params
from tests.conftest import PG_ADMIN, _sqla_url

PARAMS = complete_params("single_decode", {"kv_len": 512}, "fa2")


def _diff(engine: Engine, metadata: MetaData = Base.metadata) -> list[object]:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, metadata))


def _check(engine: Engine) -> None:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == head
    tables = set(inspect(engine).get_table_names())
    assert {t.name for t in Base.metadata.sorted_tables} <= tables
    assert _diff(engine) == []
    # The comparison is live: against empty metadata every table shows up as a difference.
    assert len(_diff(engine, MetaData())) >= len(Base.metadata.sorted_tables)


@pytest.fixture
def fresh_pg() -> Iterator[str]:
    name = f"kwmig_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _sqla_url(name)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_upgrade_head_on_fresh_postgres(fresh_pg: str) -> None:
    upgrade(fresh_pg)
    engine = make_engine(fresh_pg)
    try:
        _check(engine)
        upgrade(fresh_pg)  # idempotent: a second `kernelwatch db upgrade` is a no-op
        _check(engine)
    finally:
        engine.dispose()


def test_upgrade_head_on_fresh_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'kw.sqlite'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        _check(engine)
    finally:
        engine.dispose()


def test_upgrade_recomputes_the_ci_of_points_measured_in_repeats(fresh_pg: str) -> None:
    """0003: points stored with the percentile interval get the CI for few repeats from their
    stored samples; a point of one repeat keeps the interval it had."""
    upgrade(fresh_pg)
    engine = make_engine(fresh_pg)
    rng = np.random.default_rng(1)
    levels = np.repeat(100.0 + rng.normal(0.0, 1.0, 3), 10)
    three = list(levels + rng.normal(0.0, 0.05, 30))
    try:
        with Session(engine) as s:
            job = Job(name="m", kernel="single_decode", spec={})
            s.add(job)
            s.flush()
            run = Run(job_id=job.id, target="h200", queue="q", point_indices=[0, 1])
            s.add(run)
            s.flush()
            for i, (samples, sizes) in enumerate([(three, [10, 10, 10]), (three, None)]):
                store_point(s, run, "single_decode", PARAMS, {
                    "point_index": i, "backend": "fa2", "status": "ok",
                    "samples_us": samples, "repeat_sizes": sizes})
            s.commit()
            # as 0002 left them: some other interval
            s.execute(update(Point).values(ci_low_us=1.0, ci_high_us=2.0))
            s.commit()
        command.downgrade(alembic_config(fresh_pg), "0002_sample_repeat")
        command.upgrade(alembic_config(fresh_pg), "0003_point_ci_few_repeats")
        with Session(engine) as s:
            repeated, single = s.scalars(select(Point).order_by(Point.point_index)).all()
        st = summarize(three, [0] * 10 + [1] * 10 + [2] * 10)
        assert (repeated.ci_low_us, repeated.ci_high_us) == pytest.approx((st.ci_low, st.ci_high))
        assert st.ci_low < st.median < st.ci_high
        assert (single.ci_low_us, single.ci_high_us) == (1.0, 2.0)
    finally:
        engine.dispose()


def test_release_tags_move_from_the_json_into_rows_and_back(fresh_pg: str) -> None:
    """0004: a release stored under 0003 with its per-tag progress in ``details["tags"]``
    comes out as ReleaseTag rows (and its details without the tags); downgrading puts the
    same JSON back."""
    command.upgrade(alembic_config(fresh_pg), "0003_point_ci_few_repeats")
    engine = make_engine(fresh_pg)
    now = datetime.now(UTC)
    tags = {
        "h100": {"jobs": [3, 4], "state": "done", "comparison_id": 1,
                 "counts": {"regression": 1, "unchanged": 5}, "baseline_run_ids": [5],
                 "contender_run_ids": [6], "regressions": 1, "confirmed": 1,
                 "not_reproduced": 0},
        "cpu": {"jobs": [], "state": "no_baseline", "message": "no runs of one of the versions"},
    }
    details = {"tags": tags, "notification": {"sent": False, "error": None}}
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO releases (version, previous_version, source, status, details, "
                "created_at) VALUES ('0.6.18', '0.5.3', 'manual', 'complete', "
                "CAST(:details AS JSON), :now), ('0.5.3', NULL, 'manual', 'no_nodes', "
                "CAST(:empty AS JSON), :now)"),
                {"details": json.dumps(details), "empty": json.dumps({"tags": {}}), "now": now})
            conn.execute(text(
                "INSERT INTO comparisons (baseline_run_ids, contender_run_ids, threshold, "
                "summary, release_id, created_at) SELECT '[5]', '[6]', 0.03, '{}', id, :now "
                "FROM releases WHERE version = '0.6.18'"), {"now": now})
        upgrade(fresh_pg)
        with Session(engine) as s:
            release = s.scalars(select(Release).where(Release.version == "0.6.18")).one()
            assert release.details == {"notification": {"sent": False, "error": None}}
            rows = s.scalars(select(ReleaseTag).order_by(ReleaseTag.tag)).all()
            assert [(r.release_id, r.tag) for r in rows] == [(release.id, "cpu"),
                                                             (release.id, "h100")]
            assert {r.tag: r.as_dict() for r in rows} == tags
            assert rows[1].state == TagState.done and rows[1].job_ids == [3, 4]
            empty = s.scalars(select(Release).where(Release.version == "0.5.3")).one()
            assert empty.details == {}
        command.downgrade(alembic_config(fresh_pg), "0003_point_ci_few_repeats")
        assert "release_tags" not in inspect(engine).get_table_names()
        with engine.connect() as conn:
            back = dict(conn.execute(text("SELECT version, details FROM releases")).all())
        assert back["0.6.18"] == details
        assert back["0.5.3"] == {"tags": {}}
    finally:
        engine.dispose()


def _store_two_points(engine: Engine, kernel: str, params: dict[str, object]) -> list[float]:
    """A point of three repeats far apart (as a noisy CPU run) and one of one repeat."""
    rng = np.random.default_rng(2)
    samples = list(np.concatenate([rng.normal(m, m * 0.02, 10) for m in (200.0, 1040.0, 3000.0)]))
    with Session(engine) as s:
        job = Job(name="m", kernel=kernel, spec={"name": "m", "kernel": kernel,
                                                 "params": {"kv_len": [512]}})
        s.add(job)
        s.flush()
        run = Run(job_id=job.id, target="cpu", queue="q", point_indices=[0, 1])
        s.add(run)
        s.flush()
        for i, sizes in enumerate([[10, 10, 10], None]):
            store_point(s, run, kernel, params, {
                "point_index": i, "backend": "torch-sdpa", "status": "ok",
                "samples_us": samples, "repeat_sizes": sizes})
        s.commit()
    return samples


def test_0005_recomputes_every_ci_on_the_log_scale(fresh_pg: str) -> None:
    """0005: every stored point's CI is recomputed from its samples on the log scale: the
    point whose repeats lie far apart no longer reads a CI below zero."""
    upgrade(fresh_pg)
    engine = make_engine(fresh_pg)
    try:
        samples = _store_two_points(engine, "single_decode", PARAMS)
        with Session(engine) as s:  # as 0004 left them: a symmetric interval
            s.execute(update(Point).values(ci_low_us=-869.2, ci_high_us=2950.4))
            s.commit()
        command.downgrade(alembic_config(fresh_pg), "0004_release_tags")
        upgrade(fresh_pg)
        with Session(engine) as s:
            repeated, single = s.scalars(select(Point).order_by(Point.point_index)).all()
        three = summarize(samples, [0] * 10 + [1] * 10 + [2] * 10)
        assert (repeated.ci_low_us, repeated.ci_high_us) == pytest.approx(
            (three.ci_low, three.ci_high))
        assert 0 < repeated.ci_low_us < three.median < repeated.ci_high_us
        one = summarize(samples)
        assert (single.ci_low_us, single.ci_high_us) == pytest.approx((one.ci_low, one.ci_high))
    finally:
        engine.dispose()


def test_0006_to_0009_give_stored_points_the_plan_they_were_measured_with(fresh_pg: str) -> None:
    """0006 to 0009: a batch_decode point stored before use_cuda_graph, the split-KV controls,
    the attention variants and the positional encoding existed gets their legacy values (false;
    0 and false; -1 and 0; NONE) and the series key of those parameters (the key a new point
    measured that way gets); its job's spec names the values; downgrading restores both
    exactly."""
    from kernelwatch.core.series import series_key

    upgrade(fresh_pg)
    engine = make_engine(fresh_pg)
    new_params = complete_params("batch_decode", {"kv_len": 512, "use_cuda_graph": False},
                                 "torch-sdpa")
    added = ("use_cuda_graph", "fixed_split_size", "disable_split_kv", "window_left",
             "logits_soft_cap", "pos_encoding_mode")
    old_params = {k: v for k, v in new_params.items() if k not in added}
    try:
        _store_two_points(engine, "batch_decode", new_params)
        command.downgrade(alembic_config(fresh_pg), "0005_point_ci_log_scale")
        with Session(engine) as s:
            before = [(p.params, p.series_key) for p in
                      s.scalars(select(Point).order_by(Point.point_index))]
            spec_before = s.scalars(select(Job)).one().spec
        assert [p for p, _ in before] == [old_params] * 2
        assert before[0][1] == series_key("batch_decode", old_params, "torch-sdpa", None)
        upgrade(fresh_pg)
        with Session(engine) as s:
            after = [(p.params, p.series_key) for p in
                     s.scalars(select(Point).order_by(Point.point_index))]
            spec = s.scalars(select(Job)).one().spec
        assert after == [(new_params, series_key("batch_decode", new_params, "torch-sdpa",
                                                 None))] * 2
        assert spec["params"] == {"kv_len": [512], "use_cuda_graph": [False],
                                  "fixed_split_size": [0], "disable_split_kv": [False],
                                  "window_left": [-1], "logits_soft_cap": [0],
                                  "pos_encoding_mode": ["NONE"]}
        command.downgrade(alembic_config(fresh_pg), "0005_point_ci_log_scale")
        with Session(engine) as s:
            again = [(p.params, p.series_key) for p in
                     s.scalars(select(Point).order_by(Point.point_index))]
            assert s.scalars(select(Job)).one().spec == spec_before
        assert again == before
    finally:
        engine.dispose()
