"""Response models (they are the OpenAPI schema at /docs)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, get_type_hints

from pydantic import BaseModel, SerializerFunctionWrapHandler, create_model, model_serializer

from kernelwatch.core.compare.results import ComparisonResult
from kernelwatch.core.crosscheck import CrosscheckCounts
from kernelwatch.core.models import RegressionState, ReleaseStatus, TagState


class Progress(BaseModel):
    done: int
    total: int
    errored: int


class RunOut(BaseModel):
    id: int
    target: str
    queue: str
    flashinfer_version: str | None
    chunk: int
    chunks: int
    points: int  # grid points in this run (times the job's backends = its measurements)
    status: str
    attempts: int
    node: str | None
    gpu_name: str | None
    gpu_sku: str | None
    timing_method: str | None
    environment: dict[str, Any] | None
    message: str | None
    started_at: datetime | None
    finished_at: datetime | None
    # With ``crosscheck: true``: how its points compare with flashinfer_benchmark.py's
    crosscheck: CrosscheckCounts | None = None


class JobSummary(BaseModel):
    id: int
    name: str
    kind: str
    kernel: str
    status: str
    source: str
    submitted_by: str | None
    release_version: str | None
    total_points: int
    message: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobOut(JobSummary):
    progress: Progress
    spec: dict[str, Any]
    runs: list[RunOut]
    crosscheck: CrosscheckCounts | None = None  # the runs' counts summed


class JobList(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[JobSummary]


class CatalogueParam(BaseModel):
    name: str
    kind: str  # int, float, str or bool
    default: Any
    allowed: str  # the allowed values in words, as a 422 says them
    choices: list[Any] | None
    # int | float: pydantic's smart union keeps an int an int and a real bound real
    min: int | float | None
    max: int | float | None
    doc: str
    by_backend: dict[str, Any] | None  # the default per backend, where it follows the backend


class CatalogueKernel(BaseModel):
    name: str
    family: str
    description: str
    backends: list[str]
    flashinfer_backends: list[str]
    torch_backends: list[str]
    routine: str | None  # flashinfer_benchmark.py's routine measuring the same thing
    archs: list[str]  # where FlashInfer runs it (sm80, sm90, ...)
    since: str | None  # the first FlashInfer release that has it (None: every supported one)
    declared: bool  # listed only: kernelwatch does not run it, its points say why
    params: list[CatalogueParam]


class CatalogueOut(BaseModel):
    families: list[str]
    kernels: list[CatalogueKernel]


class NodeOut(BaseModel):
    id: int
    name: str
    hostname: str
    gpu_index: int | None
    gpu_name: str | None
    gpu_sku: str | None
    arch: str | None
    tags: list[str]
    queues: list[str]
    versions_ready: list[str]
    copy_bandwidth_tbps: float | None
    started_at: datetime
    last_heartbeat: datetime
    heartbeat_age_seconds: float
    live: bool


class Health(BaseModel):
    status: str
    database: str


class JobResults(BaseModel):
    job_id: int
    status: str
    progress: Progress
    rows: list[dict[str, Any]]  # one flat row per point: job, run, environment, param_*, stats


# --------------------------------------------------------------------------- comparisons


class EnvironmentDifferenceOut(BaseModel):
    field: str  # driver, torch, torch_cuda, flashinfer_cubin, ...
    baseline: list[str]  # the values seen on that side (several: a mixed side)
    contender: list[str]
    text: str  # "driver: 580.65 vs 590.10"


# GET /v1/compare answers ComparisonResult.to_dict(): the result's own fields, with the
# environment differences typed, and what to_dict adds (the confidence, points per verdict).
_COMPARISON_FIELDS: dict[str, Any] = {
    **{name: (hint, ...) for name, hint in get_type_hints(ComparisonResult).items()},
    "environment_differences": (list[EnvironmentDifferenceOut], []),
    "confidence": (float, ...),
    "counts": (dict[str, int], ...),  # points per verdict, controls left out
    "control_counts": (dict[str, int], ...),  # the control series' verdicts
}
ComparisonOut = create_model(
    "ComparisonOut",
    __doc__="A comparison of contender runs with baseline runs, point by point.",
    **_COMPARISON_FIELDS,
)


# --------------------------------------------------------------------------- regressions


class RegressionOut(BaseModel):
    id: int
    comparison_id: int
    series_key: str
    kernel: str
    backend: str
    params: dict[str, Any]
    gpu_sku: str | None
    baseline_version: str | None
    contender_version: str | None
    ratio: float
    ci_low: float
    ci_high: float
    state: RegressionState
    confirm_job_id: int | None
    confirm_ratio: float | None
    confirm_ci_low: float | None
    confirm_ci_high: float | None
    acknowledged: bool
    acknowledged_by: str | None
    acknowledged_at: str | None
    created_at: str | None


# --------------------------------------------------------------------------- releases


class ReleaseTagOut(BaseModel):
    """A release's progress on one GPU tag; a field without a value is left out."""

    jobs: list[int]
    state: TagState
    message: str | None = None  # why it was not compared
    comparison_id: int | None = None
    counts: dict[str, int] | None = None  # points per verdict
    baseline_run_ids: list[int] | None = None
    contender_run_ids: list[int] | None = None
    regressions: int | None = None  # found by the comparison
    confirmed: int | None = None
    not_reproduced: int | None = None

    @model_serializer(mode="wrap")
    def _without_empty(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class ReleaseJobOut(BaseModel):
    id: int
    name: str
    target: str | None
    status: str


class ReleaseBaselineOut(BaseModel):
    """How the release's baseline was chosen and measured."""

    version: str | None
    source: str  # "FlashInfer's previous release (index URL)", "named by the operator", ...
    measured: str  # in the release's own jobs, on the same nodes
    changed_from: str | None = None  # the baseline an operator replaced
    cancelled_jobs: int | None = None  # unfinished jobs of that baseline, cancelled


class NotificationOut(BaseModel):
    """The outcome of the release's notification (KERNELWATCH_NOTIFY_URL)."""

    sent: bool
    attempts: int = 0
    response_code: int | None = None  # the last HTTP status (None: no answer)
    error: str | None = None
    url: str | None = None
    at: str | None = None


class PrebuildBuildOut(BaseModel):
    """One run's build (kernelwatch.worker.prebuild.Built); records made before a field was
    added lack it."""

    run_id: int | None = None
    version: str | None = None
    kernel: str | None = None
    units: int | None = None
    failed: int | None = None
    unsupported: int | None = None
    jit_seconds: float | None = None
    wall_seconds: float | None = None
    max_jobs: str | None = None
    error: str | None = None
    # seconds from the start of the release's builds to this one's end
    ended_after: float | None = None


class PrebuildOut(BaseModel):
    runs: int
    wall_seconds: float
    jit_seconds: float
    longest_seconds: float
    # each run measured as its own build ended (False: every run waited for the last build)
    measured_as_built: bool = False
    builds: list[PrebuildBuildOut]


class ReleaseOut(BaseModel):
    version: str
    previous_version: str | None
    status: ReleaseStatus
    # pending | passed | regressed (a confirmed regression) | not_compared
    verdict: str
    source: str
    created_at: str | None
    notified_at: str | None
    message: str | None
    baseline: ReleaseBaselineOut | None = None  # None: recorded before baselines were
    notification: NotificationOut | None = None  # None until the release is complete
    status_url: str  # poll it: GET this URL for the release's progress and verdict
    # per GPU tag, the FlashInfer builds its node ran before measuring (worker/prebuild.py)
    prebuild: dict[str, PrebuildOut] = {}
    tags: dict[str, ReleaseTagOut]
    jobs: list[ReleaseJobOut]


class ReleaseCreated(ReleaseOut):
    created: bool


class ReleaseListItem(BaseModel):
    version: str
    previous_version: str | None
    status: ReleaseStatus
    source: str
    created_at: str | None
    notified_at: str | None
    tags: dict[str, TagState]  # per GPU tag: its state


class ReleaseRunOut(BaseModel):
    id: int
    job_id: int
    target: str
    status: str
    flashinfer_version: str | None
    gpu_sku: str | None
    gpu_name: str | None
    node_id: int | None


class ReleaseComparisonOut(BaseModel):
    id: int
    gpu_sku: str | None
    baseline: str | None
    contender: str | None
    summary: dict[str, Any]  # the comparison without its points (see ComparisonOut)
    regressions: list[RegressionOut]


class ReleaseDetail(ReleaseOut):
    runs: list[ReleaseRunOut]
    comparisons: list[ReleaseComparisonOut]


# --------------------------------------------------------------------------- webhooks


class WebhookReleaseOut(ReleaseOut):
    """A release event acted on: the release, as created by this delivery or found."""

    created: bool
    delivery: str
    event: str | None = None
    replayed: bool | None = None  # a redelivery: the answer stored for the first one
    created_by_delivery: bool | None = None

    @model_serializer(mode="wrap")
    def _without_empty(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        optional = ("event", "replayed", "created_by_delivery")
        return {k: v for k, v in handler(self).items() if v is not None or k not in optional}


class WebhookPing(BaseModel):
    ok: bool
    event: str
    zen: str | None
    hook_id: int | None


class WebhookIgnored(BaseModel):
    ignored: bool
    event: str
    reason: str
