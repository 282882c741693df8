"""points.params: fixed_split_size and disable_split_kv, as stored points were measured

The batch wrappers' split-KV controls became parameters. Points stored before were planned
without them (FlashInfer chose the split): they get fixed_split_size 0 and disable_split_kv
false, and the series keys of those parameters; jobs' specs name them (core.legacy).

Create Date: 2026-12-04 23:45:00
"""

from alembic import op

from kernelwatch.core.legacy import add_legacy_params, remove_legacy_params

revision: str = "0007_points_split_kv"
down_revision: str | None = "0006_points_plan_mode"

PARAMS = ["fixed_split_size", "disable_split_kv"]


def upgrade() -> None:
    add_legacy_params(op.get_bind(), PARAMS)


def downgrade() -> None:
    remove_legacy_params(op.get_bind(), PARAMS)
