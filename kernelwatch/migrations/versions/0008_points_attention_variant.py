"""points.params: window_left and logits_soft_cap, as stored points were measured

The attention variants the wrappers take became parameters: a sliding window and a logits soft
cap. Points stored before had neither: they get window_left -1 and logits_soft_cap 0, and the
series keys of those parameters; jobs' specs name them (core.legacy).

Create Date: 2026-12-05 00:05:00
"""

from alembic import op

from kernelwatch.core.legacy import add_legacy_params, remove_legacy_params

revision: str = "0008_points_attention_variant"
down_revision: str | None = "0007_points_split_kv"

PARAMS = ["window_left", "logits_soft_cap"]


def upgrade() -> None:
    add_legacy_params(op.get_bind(), PARAMS)


def downgrade() -> None:
    remove_legacy_params(op.get_bind(), PARAMS)
