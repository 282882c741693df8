"""points.params: use_cuda_graph, as the points stored before it were measured

The batch wrappers' CUDA-graph plan mode became a parameter (use_cuda_graph, default true).
Points stored before were measured with wrappers built without it: they get the parameter's
legacy value (false) and the series key of those parameters, found by reproducing each stored
key (the measurement conditions that made it are not stored); a point whose key cannot be
reproduced is left as it was. Jobs' specs name the value too, so a job's grid (what a resumed
or redriven run measures) stays the grid it measured. Downgrade removes both.

Create Date: 2026-12-04 23:15:00
"""
from alembic import op

from kernelwatch.core.legacy import add_legacy_params, remove_legacy_params

revision: str = "0006_points_plan_mode"
down_revision: str | None = "0005_point_ci_log_scale"


def upgrade() -> None:
    add_legacy_params(op.get_bind(), ["use_cuda_graph"])


def downgrade() -> None:
    remove_legacy_params(op.get_bind(), ["use_cuda_graph"])
