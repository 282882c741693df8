"""Jobs: submit a sweep, list, inspect, cancel, read results. Thin: parsing and HTTP here,
everything else in ``kernelwatch.core.jobs``."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from enum import StrEnum
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from kernelwatch.api.deps import CurrentToken, ReadAccess, RowId, SessionDep
from kernelwatch.api.errors import CSV_OR_JSON_RESPONSES, ERROR_RESPONSES, ErrorOut
from kernelwatch.api.schemas import JobList, JobOut, JobResults, JobSummary, Progress, RunOut
from kernelwatch.core import crosscheck, hooks, outbox
from kernelwatch.core import jobs as service
from kernelwatch.core.errors import Conflict
from kernelwatch.core.models import Job, JobStatus, Node, Run
from kernelwatch.core.spec import SweepSpec

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
log = logging.getLogger("kernelwatch.api")

JSON_TYPES = ("application/json", "")
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
SOURCES = ("api", "cli")
ENQUEUE_FAILED = "enqueue failed"
# A valid spec has at most 10,000 grid points, so far fewer values than this.
MAX_SPEC_NODES = 200_000


def _body_error(msg: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body",), "msg": msg, "type": "value_error"}])


async def spec_from_body(request: Request) -> SweepSpec:
    """The sweep spec from a JSON body, or YAML with a YAML content type. Parsing happens here
    (not in FastAPI's body handling) so that both formats share one validation path. The body
    is read on the event loop; parsing (up to 1 MiB of YAML) and validation (up to 10,000 grid
    points) run in the thread pool so they never stall other requests."""
    raw = await request.body()
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return await run_in_threadpool(parse_spec, raw, ctype)


def parse_spec(raw: bytes, ctype: str) -> SweepSpec:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _body_error("body is not UTF-8 text") from None
    if not text.strip():
        raise _body_error("empty body: send a sweep spec as JSON (or YAML with "
                          "Content-Type: application/yaml)")
    data: Any
    # Besides syntax errors: integers over Python's 4300-digit limit raise ValueError and
    # deeply nested arrays RecursionError; both are the client's malformed input.
    if ctype in YAML_TYPES:
        try:
            data = yaml.safe_load(text)
        except (yaml.YAMLError, ValueError, RecursionError) as e:
            raise _body_error(f"malformed YAML: {_first_line(e)}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise _body_error(
                f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}"
                + ("" if ctype in JSON_TYPES else
                   f" (Content-Type {ctype!r}; use application/yaml for YAML)")
            ) from None
        except (ValueError, RecursionError) as e:
            raise _body_error(f"malformed JSON: {_first_line(e)}") from None
    if not isinstance(data, dict):
        raise _body_error("a sweep spec must be a JSON object / YAML mapping, not "
                          f"{type(data).__name__}")
    if _expanded_size(data, MAX_SPEC_NODES) > MAX_SPEC_NODES:
        raise _body_error(f"the spec expands to more than {MAX_SPEC_NODES} values (YAML "
                          "aliases nested in aliases?); write the lists out")
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as e:
        # The exception handler (api/errors.py) turns these into the API's message shape.
        raise RequestValidationError(
            [{**err, "loc": ("body", *err["loc"])} for err in e.errors()]
        ) from None


def _expanded_size(data: Any, budget: int) -> int:
    """Values in the document once YAML aliases are expanded, counting stops past ``budget``.
    A few hundred bytes of nested aliases ("billion laughs") expand to billions of values;
    validating or quoting them in an error message would exhaust memory."""
    count = 0
    stack = [data]
    while stack and count <= budget:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline_refs(defs[ref.rsplit("/", 1)[1]], defs)
        return {k: _inline_refs(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


def _spec_openapi() -> dict[str, Any]:
    """The request body in OpenAPI: the SweepSpec schema, as JSON or YAML."""
    schema = SweepSpec.model_json_schema()
    body_schema = _inline_refs(schema, schema.pop("$defs", {}))
    return {
        "requestBody": {
            "required": True,
            "description": "A sweep spec (JSON, or YAML with Content-Type application/yaml).",
            "content": {
                "application/json": {"schema": body_schema},
                "application/yaml": {"schema": body_schema},
            },
        },
    }


SpecBody = Annotated[SweepSpec, Depends(spec_from_body)]


def job_summary(job: Job, message: str | None = None) -> JobSummary:
    return JobSummary(
        id=job.id, name=job.name, kind=job.kind, kernel=job.kernel, status=job.status,
        source=job.source, submitted_by=job.submitted_by, release_version=job.release_version,
        total_points=job.total_points, message=message if message is not None else job.message,
        created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
    )


def job_detail(session: Any, job: Job, new_runs: list[Run] | None = None) -> JobOut:
    """The job as GET /v1/jobs/{id} shows it. ``new_runs``: the job was created by this
    request, so no run has a node or a point yet; saves two queries on every submission."""
    waiting = service.waiting_reason(session, job)
    if new_runs is not None:
        pairs: list[tuple[Run, Node | None]] = [(r, None) for r in new_runs]
        progress = {"done": 0, "total": job.total_points, "errored": 0}
    else:
        pairs = service.runs_with_nodes(session, job.id)
        progress = service.job_progress(session, job)
    checks = crosscheck.counts_by_run(session, [r.id for r, _ in pairs]) if new_runs is None \
        else {}
    runs = [
        RunOut(
            id=r.id, target=r.target, queue=r.queue, flashinfer_version=r.flashinfer_version,
            chunk=r.chunk, chunks=r.chunks, points=len(r.point_indices), status=r.status,
            attempts=r.attempts, node=n.name if n else None, gpu_name=r.gpu_name,
            gpu_sku=r.gpu_sku, timing_method=r.timing_method, environment=r.environment,
            message=r.message, started_at=r.started_at, finished_at=r.finished_at,
            crosscheck=checks.get(r.id),
        )
        for r, n in pairs
    ]
    summary = job_summary(job, waiting or job.message)
    return JobOut(**summary.model_dump(), progress=Progress(**progress), spec=job.spec,
                  runs=runs, crosscheck=crosscheck.total(checks.values()))


@router.post(
    "",
    status_code=201,
    response_model=JobOut,
    openapi_extra=_spec_openapi(),
    responses={200: {"description": "An existing job (same Idempotency-Key)",
                     "model": JobOut},
               401: ERROR_RESPONSES[401],
               409: {"model": ErrorOut,
                     "description": "Idempotency-Key already used with a different spec"},
               422: {"model": ErrorOut,
                     "description": "Invalid spec: detail names the field and allowed values"},
               503: {"model": ErrorOut,
                     "description": "Stored, but the broker refused its runs: retry with the "
                                    "same Idempotency-Key"}},
)
def submit_job(
    # Order matters: FastAPI resolves these in turn, so a request without a valid token is
    # answered 401 before its body is read or validated.
    session: SessionDep,
    token: CurrentToken,
    spec: SpecBody,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    x_kernelwatch_source: Annotated[str, Header(pattern="^(api|cli)$")] = "api",
) -> JobOut:
    """Submit a sweep. 201 with the new job, or 200 with the job an earlier request with the
    same ``Idempotency-Key`` created. Runs are enqueued only after the job is committed."""
    job, created, runs = service.create_job(
        session, spec, source=x_kernelwatch_source, submitted_by=token.name,
        idempotency_key=idempotency_key,
    )
    if not created and job.spec != spec.model_dump(mode="json"):
        # Same key, different request: answering with the old job would hide the mistake.
        raise Conflict(f"Idempotency-Key {idempotency_key!r} was already used "
                       f"for job {job.id} with a different spec")
    retry_enqueue = (not created and job.status == JobStatus.queued
                     and (job.message or "").startswith(ENQUEUE_FAILED))
    if created or retry_enqueue:
        service.enqueue_after_commit(session, runs)
    session.commit()
    if created or retry_enqueue:
        _record_enqueue(session, job)
    if not created:
        response.status_code = 200
        return job_detail(session, job)
    return job_detail(session, job, new_runs=runs)


def _record_enqueue(session: Any, job: Job) -> None:
    """The runs were sent once the job was committed (core.outbox). When the broker refused
    them the job is kept (the database is the truth) with a message, and a retry with the
    same Idempotency-Key enqueues it again."""
    failed = outbox.failures(session)
    if failed:
        e = failed[0].error
        job.message = f"{ENQUEUE_FAILED}: {type(e).__name__}: {e}"
        session.commit()
        raise HTTPException(
            503, detail=f"job {job.id} is stored but the broker refused its runs ({e}); "
                        "retry with the same Idempotency-Key to enqueue it again",
        ) from e
    if job.message and job.message.startswith(ENQUEUE_FAILED):
        job.message = None
        session.commit()


@router.get("", response_model=JobList)
def list_jobs(
    session: SessionDep,
    _: ReadAccess,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this state")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> JobList:
    """Jobs, newest first."""
    rows, total = service.list_jobs(session, status=status.value if status else None,
                                    limit=limit, offset=offset)
    waiting = service.waiting_reasons(session, rows)
    return JobList(total=total, limit=limit, offset=offset,
                   items=[job_summary(j, waiting.get(j.id)) for j in rows])


@router.get("/{job_id}", response_model=JobOut, responses={404: ERROR_RESPONSES[404]})
def get_job(job_id: RowId, session: SessionDep, _: ReadAccess) -> JobOut:
    """State, progress (points done / total / errored), why it waits, and its runs."""
    return job_detail(session, service.get_job(session, job_id))


@router.post("/{job_id}/cancel", response_model=JobOut,
             responses={401: ERROR_RESPONSES[401], 404: ERROR_RESPONSES[404],
                        409: {"model": ErrorOut, "description": "The job already finished"}})
def cancel_job(job_id: RowId, session: SessionDep, _: CurrentToken) -> JobOut:
    """Cancel a queued or running job; workers stop at the next point."""
    job = service.cancel_job(session, service.get_job(session, job_id))
    session.commit()
    hooks.on_job_finished(job.id)
    return job_detail(session, job)


class ResultFormat(StrEnum):
    json = "json"
    csv = "csv"


@router.get("/{job_id}/results", response_model=JobResults,
            responses=CSV_OR_JSON_RESPONSES)
def job_results(
    job_id: RowId,
    session: SessionDep,
    _: ReadAccess,
    format: Annotated[ResultFormat, Query(description="json or csv")] = ResultFormat.json,
) -> Response:
    """One flat row per measured point: job, run and environment columns, the parameters
    (``param_*``), then every statistic (median, p10/p90, CV, bootstrap CI, TB/s, ...)."""
    job = service.get_job(session, job_id)
    rows = service.result_rows(session, job)
    if format == ResultFormat.csv:
        return Response(content=rows_to_csv(rows), media_type="text/csv",
                        headers={"Content-Disposition":
                                 f'attachment; filename="job-{job_id}.csv"'})
    progress = service.job_progress(session, job)
    return JSONResponse(content={"job_id": job.id, "status": job.status,
                                 "progress": progress, "rows": [_json_safe(r) for r in rows]})


def _json_safe(row: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN or infinity (a kernel that wrote NaNs has max_abs_error NaN): null in
    JSON, with the point's status and error saying what happened; the CSV keeps nan/inf."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in row.items()}


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:  # parameters differ between kernels: the union, in first-seen order
        columns.extend(k for k in row if k not in columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
