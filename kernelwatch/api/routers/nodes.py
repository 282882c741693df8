"""Workers (one node per GPU) with their tags and heartbeats."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from kernelwatch.api.deps import ReadAccess, SessionDep
from kernelwatch.api.schemas import NodeOut
from kernelwatch.core.models import Node, utcnow
from kernelwatch.core.nodes import aware, heartbeat_age, is_alive

router = APIRouter(tags=["nodes"])


@router.get("/v1/nodes", response_model=list[NodeOut])
def list_nodes(session: SessionDep, _: ReadAccess) -> list[NodeOut]:
    """Every registered node; ``live`` when its heartbeat is newer than
    KERNELWATCH_NODE_STALE_SECONDS."""
    now = utcnow()
    out = []
    for n in session.scalars(select(Node).order_by(Node.name)):
        out.append(NodeOut(
            id=n.id, name=n.name, hostname=n.hostname, gpu_index=n.gpu_index,
            gpu_name=n.gpu_name, gpu_sku=n.gpu_sku, arch=n.arch,
            tags=[str(t) for t in n.tags or []], queues=[str(q) for q in n.queues or []],
            versions_ready=[str(v) for v in n.versions_ready or []],
            copy_bandwidth_tbps=n.copy_bandwidth_tbps, started_at=n.started_at,
            last_heartbeat=aware(n.last_heartbeat),
            heartbeat_age_seconds=heartbeat_age(n, now).total_seconds(),
            live=is_alive(n, now),
        ))
    return out
