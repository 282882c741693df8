"""release_tags: a release's per-tag progress in its own table

A release's progress on each GPU tag (its jobs, the comparison of their runs, the state and the
confirmation counts) was a JSON object in ``releases.details["tags"]``. It becomes one row per
(release, tag); the data moves from the JSON into the rows, and back on downgrade.

Create Date: 2026-12-04 23:00:00
"""
import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0004_release_tags"
down_revision: str | None = "0003_point_ci_few_repeats"

# Optional fields of a tag, as the JSON named them (the job ids were "jobs").
FIELDS = ("message", "comparison_id", "counts", "baseline_run_ids", "contender_run_ids",
          "regressions", "confirmed", "not_reproduced")
JSON_FIELDS = ("counts", "baseline_run_ids", "contender_run_ids")


def _json(value: Any) -> Any:
    # A JSON column read through text() comes back as a string on some backends.
    return json.loads(value) if isinstance(value, str) else value


def _tables() -> tuple[sa.Table, sa.Table]:
    meta = sa.MetaData()
    releases = sa.Table("releases", meta, sa.Column("id", sa.BigInteger), sa.Column("details", sa.JSON))
    tags = sa.Table(
        "release_tags", meta,
        sa.Column("id", sa.BigInteger), sa.Column("release_id", sa.BigInteger),
        sa.Column("tag", sa.String(40)), sa.Column("state", sa.String(20)),
        sa.Column("job_ids", sa.JSON), sa.Column("comparison_id", sa.BigInteger),
        sa.Column("baseline_run_ids", sa.JSON), sa.Column("contender_run_ids", sa.JSON),
        sa.Column("counts", sa.JSON), sa.Column("regressions", sa.Integer),
        sa.Column("confirmed", sa.Integer), sa.Column("not_reproduced", sa.Integer),
        sa.Column("message", sa.Text), sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
    )
    return releases, tags


def upgrade() -> None:
    op.create_table('release_tags',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('release_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('tag', sa.String(length=40), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('job_ids', sa.JSON(), nullable=False),
    sa.Column('comparison_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('baseline_run_ids', sa.JSON(), nullable=True),
    sa.Column('contender_run_ids', sa.JSON(), nullable=True),
    sa.Column('counts', sa.JSON(), nullable=True),
    sa.Column('regressions', sa.Integer(), nullable=True),
    sa.Column('confirmed', sa.Integer(), nullable=True),
    sa.Column('not_reproduced', sa.Integer(), nullable=True),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['comparison_id'], ['comparisons.id'], name=op.f('fk_release_tags_comparison_id_comparisons'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['release_id'], ['releases.id'], name=op.f('fk_release_tags_release_id_releases'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_release_tags')),
    sa.UniqueConstraint('release_id', 'tag', name='uq_release_tags_release_tag')
    )
    with op.batch_alter_table('release_tags', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_release_tags_release_id'), ['release_id'], unique=False)

    conn = op.get_bind()
    releases, tags = _tables()
    now = datetime.now(UTC)
    comparisons = {i for (i,) in conn.execute(sa.text("SELECT id FROM comparisons"))}
    for release_id, raw in conn.execute(sa.select(releases.c.id, releases.c.details)).all():
        details = dict(_json(raw) or {})
        if "tags" not in details:
            continue
        for tag, st in sorted((details.pop("tags") or {}).items()):
            row: dict[str, Any] = {f: st.get(f) for f in FIELDS}
            if row["comparison_id"] not in comparisons:
                row["comparison_id"] = None  # a comparison deleted since: not a foreign key
            conn.execute(tags.insert().values(
                release_id=release_id, tag=tag, state=st.get("state") or "benchmarking",
                job_ids=list(st.get("jobs") or []), created_at=now, updated_at=now, **row,
            ))
        conn.execute(releases.update().where(releases.c.id == release_id)
                     .values(details=details))


def downgrade() -> None:
    conn = op.get_bind()
    releases, tags = _tables()
    by_release: dict[int, dict[str, Any]] = {}
    for r in conn.execute(sa.select(tags).order_by(tags.c.release_id, tags.c.tag)).mappings():
        entry: dict[str, Any] = {"jobs": list(_json(r["job_ids"]) or []), "state": r["state"]}
        for f in FIELDS:
            value = _json(r[f]) if f in JSON_FIELDS else r[f]
            if value is not None:
                entry[f] = value
        by_release.setdefault(int(r["release_id"]), {})[r["tag"]] = entry
    for release_id, raw in conn.execute(sa.select(releases.c.id, releases.c.details)).all():
        details = {**dict(_json(raw) or {}), "tags": by_release.get(int(release_id), {})}
        conn.execute(releases.update().where(releases.c.id == release_id)
                     .values(details=details))

    with op.batch_alter_table('release_tags', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_release_tags_release_id'))

    op.drop_table('release_tags')
