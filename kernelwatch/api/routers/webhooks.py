"""``POST /v1/webhooks/github``: FlashInfer's release CI tells kernelwatch about a release.

Accepted events (``X-GitHub-Event``):
  release       action ``published``, in ``KERNELWATCH_FLASHINFER_REPO``: the tag is the version
  workflow_run  action ``completed``, conclusion ``success``, head branch a version tag
                (``v0.6.18``, ``0.6.18.post1``), in that repository
  ping          answered 200
Anything else is answered 202 with the reason and changes nothing.

Security: ``X-Hub-Signature-256`` must be ``sha256=`` + the HMAC-SHA256 of the raw body with
``KERNELWATCH_WEBHOOK_SECRET``, compared in constant time: missing or wrong -> 401. With no
secret configured the endpoint refuses everything (503): an open trigger for GPU work is not
an option. Malformed JSON or missing fields -> 400 with the reason.

Idempotency: on ``X-GitHub-Delivery`` (a redelivery answers the stored response) and on the
version (a second event for a known release answers its existing jobs). Both rest on unique
constraints, so identical deliveries arriving at once create one release: the losers' inserts
wait for the winner's commit, fail, and read what it stored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kernelwatch.api.deps import SessionDep
from kernelwatch.api.errors import ErrorOut
from kernelwatch.api.schemas import WebhookIgnored, WebhookPing, WebhookReleaseOut
from kernelwatch.core.models import WebhookDelivery
from kernelwatch.core.releases import (
    ReleaseStart,
    SuiteError,
    parse_version_tag,
    release_response,
    trigger_release,
)
from kernelwatch.core.settings import get_settings

log = logging.getLogger("kernelwatch.webhooks")
router = APIRouter(tags=["webhooks"])

HANDLED = ("release", "workflow_run", "ping")


def _err(status: int, msg: str) -> JSONResponse:
    return JSONResponse({"detail": msg}, status_code=status)


def _ignored(event: str, reason: str) -> JSONResponse:
    return JSONResponse({"ignored": True, "event": event, "reason": reason}, status_code=202)


def signature_ok(secret: str, body: bytes, header: str) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.strip().encode())


def _field(data: Any, path: str) -> Any:
    """data['a']['b'] for 'a.b'; KeyError naming the missing path."""
    cur = data
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise KeyError(path)
        cur = cur[part]
    return cur


def version_from(event: str, payload: dict[str, Any]) -> tuple[str | None, str]:
    """(version, '') for an event to act on, or (None, why it is ignored).
    KeyError when a field GitHub always sends is missing."""
    repo = str(_field(payload, "repository.full_name"))
    wanted = get_settings().flashinfer_repo
    if event == "release":
        action = str(_field(payload, "action"))
        tag = str(_field(payload, "release.tag_name"))
        if action != "published":
            return None, f"release action {action!r} is not 'published'"
    else:
        action = str(_field(payload, "action"))
        run = _field(payload, "workflow_run")
        conclusion = _field(payload, "workflow_run.conclusion")
        tag = str(run.get("head_branch") or "")
        if action != "completed":
            return None, f"workflow_run action {action!r} is not 'completed'"
        if conclusion != "success":
            return None, f"workflow_run conclusion {conclusion!r} is not 'success'"
    if repo.lower() != wanted.lower():
        return None, f"repository {repo!r} is not {wanted!r} (KERNELWATCH_FLASHINFER_REPO)"
    version = parse_version_tag(tag)
    if version is None:
        return None, f"{tag!r} is not a version tag (e.g. v0.6.18 or 0.6.18.post1)"
    return version, ""


def _stored(session: Session, delivery_id: str) -> WebhookDelivery | None:
    return session.scalar(select(WebhookDelivery).where(WebhookDelivery.delivery_id == delivery_id))


def _replay(d: WebhookDelivery) -> JSONResponse:
    return JSONResponse({**(d.response or {}), "created": False, "replayed": True},
                        status_code=200)


@router.post(
    "/v1/webhooks/github",
    status_code=201,
    response_model=WebhookReleaseOut,
    responses={
        200: {"description": "A release already known, a redelivery (replayed: its first "
                             "answer), or a ping",
              "model": WebhookReleaseOut | WebhookPing},
        202: {"description": "An event or action that is not acted on, with the reason",
              "model": WebhookIgnored},
        400: {"model": ErrorOut, "description": "Malformed body or missing header or field"},
        401: {"model": ErrorOut, "description": "Missing or wrong X-Hub-Signature-256"},
        503: {"model": ErrorOut, "description": "No webhook secret configured, or the release "
                                                "suite cannot be read"},
    },
)
async def github(
    request: Request,
    session: SessionDep,
    x_github_event: str | None = Header(None),
    x_github_delivery: str | None = Header(None),
    x_hub_signature_256: str | None = Header(None),
) -> JSONResponse:
    secret = get_settings().webhook_secret
    if not secret:
        return _err(503, "webhook disabled: KERNELWATCH_WEBHOOK_SECRET is not configured")
    body = await request.body()
    if not x_hub_signature_256:
        return _err(401, "missing X-Hub-Signature-256 header")
    if not signature_ok(secret, body, x_hub_signature_256):
        return _err(401, "X-Hub-Signature-256 does not match the body (wrong secret?)")
    if not x_github_event:
        return _err(400, "missing X-GitHub-Event header")
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return _err(400, f"malformed JSON body: {e}")
    if not isinstance(payload, dict):
        return _err(400, "malformed body: expected a JSON object")
    event = x_github_event
    if event == "ping":
        return JSONResponse({"ok": True, "event": "ping", "zen": payload.get("zen"),
                             "hook_id": payload.get("hook_id")}, status_code=200)
    if event not in HANDLED:
        return _ignored(event, f"event {event!r} is not handled; handled: {', '.join(HANDLED)}")
    if not x_github_delivery:
        return _err(400, "missing X-GitHub-Delivery header")
    try:
        version, why = version_from(event, payload)
    except KeyError as e:
        return _err(400, f"{event} payload: missing field {e.args[0]!r}")
    if version is None:
        return _ignored(event, why)
    # Runs in the threadpool: the release flow is synchronous database work.
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(
        _handle, session, event, x_github_delivery, version, payload
    )


def _handle(session: Session, event: str, delivery_id: str, version: str,
            payload: dict[str, Any]) -> JSONResponse:
    found = _stored(session, delivery_id)
    if found is not None:
        return _replay(found)
    delivery = WebhookDelivery(delivery_id=delivery_id, event=event, release_version=version,
                               response={})
    try:
        with session.begin_nested():
            session.add(delivery)
            session.flush()
    except IntegrityError:
        # The same delivery is being handled concurrently: its insert won and we waited for
        # its commit; answer what it stored.
        found = _stored(session, delivery_id)
        if found is None:
            raise
        return _replay(found)
    sender = (payload.get("sender") or {}).get("login")

    def _remember(start: ReleaseStart) -> None:
        # Same transaction as the release: a replay of this delivery answers exactly this.
        delivery.response = {**release_response(session, start.release),
                             "created_by_delivery": start.created, "delivery": delivery_id}

    try:
        start = trigger_release(session, version, source="webhook",
                                submitted_by=f"github:{sender}" if sender else "github",
                                before_commit=_remember)
    except SuiteError as e:
        session.rollback()  # nothing recorded: a redelivery once it is fixed starts afresh
        log.error("webhook %s: %s", delivery_id, e)
        return _err(503, str(e))
    out = {**release_response(session, start.release), "created": start.created,
           "delivery": delivery_id, "event": event}
    # Where the release's progress and verdict can be polled.
    return JSONResponse(out, status_code=201 if start.created else 200,
                        headers={"Location": out["status_url"]})
