"""``GET /v1/catalogue``: every kernel kernelwatch benchmarks, by family, with its parameters,
allowed values, defaults, backends, flashinfer_benchmark.py routine and architectures."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from kernelwatch.api.deps import ReadAccess
from kernelwatch.api.schemas import CatalogueOut
from kernelwatch_harness import catalogue

router = APIRouter(tags=["catalogue"])


@router.get("/v1/catalogue", response_model=CatalogueOut)
def list_catalogue(_: ReadAccess) -> dict[str, Any]:
    """Every kernel of every family. A parameter whose default follows the backend (what
    FlashInfer's own benchmark builds that backend with) lists it per backend in
    ``by_backend``. FlashInfer backends run on the listed architectures only."""
    return {"families": list(catalogue.FAMILIES), "kernels": catalogue.describe()}
