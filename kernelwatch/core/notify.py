"""The release notification: one JSON message to ``KERNELWATCH_NOTIFY_URL``, Slack-compatible
(``text``, mrkdwn) plus a structured ``summary`` for machines:

    {"text": "...",
     "summary": {"release": "0.6.18.post1", "previous": "0.5.3", "status": "complete",
                 "release_url": "<dashboard>/release/0.6.18.post1",
                 "gpus": [{"tag": "h100", "gpu_sku": "h100", "comparison_id": 7,
                           "counts": {"regression": 2, "improvement": 5, "unchanged": 30, ...},
                           "confirmed": [{"kernel", "backend", "params", "ratio", "ci_low",
                                          "ci_high", "confirm_ratio", "confirm_ci_low",
                                          "confirm_ci_high"}],
                           "not_reproduced": 1,
                           "compare_url": "<dashboard>/compare?baseline=1,2&contender=3,4"}]}}
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from kernelwatch.core.db import session_scope
from kernelwatch.core.models import (
    Comparison,
    Regression,
    RegressionState,
    Release,
    ReleaseTag,
    utcnow,
)
from kernelwatch.core.settings import get_settings
from kernelwatch_harness.catalogue import point_label

log = logging.getLogger(__name__)

POST_ATTEMPTS = 3


def release_url(version: str) -> str:
    """The release's page on the dashboard: verdict, progress, every list, one click from the
    comparisons and each series' history."""
    return f"{get_settings().dashboard_url.rstrip('/')}/release/{version}"


def compare_url(baseline: list[int], contender: list[int]) -> str:
    base = get_settings().dashboard_url.rstrip("/")
    return (f"{base}/compare?baseline={','.join(map(str, baseline))}"
            f"&contender={','.join(map(str, contender))}")




def _regression(r: Regression) -> dict[str, Any]:
    return {"regression_id": r.id, "kernel": r.kernel, "backend": r.backend,
            "params": r.params, "ratio": r.ratio, "ci_low": r.ci_low, "ci_high": r.ci_high,
            "confirm_ratio": r.confirm_ratio, "confirm_ci_low": r.confirm_ci_low,
            "confirm_ci_high": r.confirm_ci_high}


def release_summary(session: Session, release: Release) -> dict[str, Any]:
    gpus = []
    for tag, st in ((t.tag, t.as_dict()) for t in session.scalars(
            select(ReleaseTag).where(ReleaseTag.release_id == release.id)
            .order_by(ReleaseTag.tag))):
        entry: dict[str, Any] = {"tag": tag, "state": st.get("state"),
                                 "comparison_id": st.get("comparison_id"),
                                 "counts": st.get("counts", {}), "confirmed": [],
                                 "unconfirmed": [], "not_reproduced": 0,
                                 "message": st.get("message")}
        if st.get("comparison_id"):
            regs = session.scalars(select(Regression).where(
                Regression.comparison_id == st["comparison_id"]).order_by(Regression.ratio.desc())
            ).all()
            entry["gpu_sku"] = regs[0].gpu_sku if regs else tag
            entry["confirmed"] = [_regression(r) for r in regs
                                  if r.state == RegressionState.confirmed]
            # flagged by the comparison, but the re-measurement that would confirm them could
            # not be made: a notification must not read "no regression" over them
            entry["unconfirmed"] = [_regression(r) for r in regs
                                    if r.state == RegressionState.confirm_failed]
            entry["not_reproduced"] = sum(r.state == RegressionState.not_reproduced
                                          for r in regs)
            entry["compare_url"] = compare_url(st.get("baseline_run_ids", []),
                                               st.get("contender_run_ids", []))
            comparison = session.get(Comparison, st["comparison_id"])
            controls = ((comparison.summary or {}).get("control_counts") or {}
                        if comparison is not None else {})
            entry["controls"] = sum(controls.values())
            entry["controls_moved"] = sum(controls.get(v, 0) for v in ("regression",
                                                                        "improvement"))
            entry["controls_one_sided"] = sum(controls.get(v, 0) for v in ("baseline_only",
                                                                            "contender_only"))
        gpus.append(entry)
    return {"release": release.version, "previous": release.previous_version,
            "status": str(release.status), "release_url": release_url(release.version),
            "gpus": gpus}


def release_text(summary: dict[str, Any]) -> str:
    head = f"*FlashInfer {summary['release']}*"
    head += f" vs {summary['previous']}" if summary.get("previous") else " (no previous release)"
    if summary.get("release_url"):
        head += f" <{summary['release_url']}|release page>"
    lines = [head]
    for g in summary["gpus"]:
        c = g.get("counts") or {}
        if not g.get("comparison_id"):
            lines.append(f"• {g['tag']}: not compared ({g.get('message') or g.get('state')})")
            continue
        confirmed, unconfirmed = g["confirmed"], g.get("unconfirmed") or []
        verdict = (f"{len(confirmed)} confirmed regression(s)" if confirmed
                   else "no confirmed regression")
        if unconfirmed:
            verdict += (f", {len(unconfirmed)} flagged that could not be confirmed (their "
                        f"re-measurement failed)")
        one_sided = c.get("baseline_only", 0) + c.get("contender_only", 0)
        lines.append(
            f"• {g['tag']}: {verdict}; {c.get('improvement', 0)} faster, "
            f"{c.get('unchanged', 0)} unchanged, {g.get('not_reproduced', 0)} flagged but not "
            f"reproduced, {c.get('not_comparable', 0)} not comparable"
            + (f", {one_sided} measured in one release only" if one_sided else "")
            + f" <{g['compare_url']}|compare>"
        )
        if g.get("controls_moved"):
            # PyTorch ran the same code in both runs: when it moved, the node did
            lines.append(f"    PyTorch controls: {g['controls_moved']} of {g['controls']} series "
                         f"moved between the runs (the same code in both: the node moved, "
                         f"not FlashInfer)")
        if g.get("controls_one_sided"):
            lines.append(f"    PyTorch controls: {g['controls_one_sided']} of {g['controls']} "
                         f"series measured in one run only (the same code in both: it failed "
                         f"on the node, not in FlashInfer)")
        lines += _regression_lines(confirmed, "")
        lines += _regression_lines(unconfirmed, ", not confirmed")
    return "\n".join(lines)


def _regression_lines(regs: list[dict[str, Any]], note: str) -> list[str]:
    """The first five of ``regs``, each with its confirmed change (else the comparison's)."""
    lines = [f"    {r['kernel']} {r['backend']} {point_label(r['kernel'], r['params'])}: "
             f"{(r['confirm_ratio'] or r['ratio']) - 1:+.1%} "
             f"(95% CI {(r['confirm_ci_low'] or r['ci_low']) - 1:+.1%} .. "
             f"{(r['confirm_ci_high'] or r['ci_high']) - 1:+.1%}){note}"
             for r in regs[:5]]
    if len(regs) > 5:
        lines.append(f"    … and {len(regs) - 5} more{note}")
    return lines


def post_json(url: str, payload: dict[str, Any]) -> dict[str, Any]:
    """POST with a few retries. The outcome as the release records it: sent or not, the
    attempts made, the last HTTP status code (None when no answer came) and the last error."""
    error: str | None = None
    code: int | None = None
    attempts = 0
    for attempt in range(POST_ATTEMPTS):
        attempts = attempt + 1
        try:
            r = httpx.post(url, json=payload, timeout=10.0)
            code = r.status_code
            if r.status_code < 300:
                return {"sent": True, "attempts": attempts, "response_code": code, "error": None}
            error = f"HTTP {r.status_code}: {r.text[:200]}"
        except httpx.HTTPError as e:
            code, error = None, f"{type(e).__name__}: {e}"
        time.sleep(0.5 * (attempt + 1))
    return {"sent": False, "attempts": attempts, "response_code": code, "error": error}


def notify_release(release_id: int) -> None:
    """Build and post the message (when a URL is configured); record the outcome in the
    release's details. Never raises: a notification problem must not undo the release."""
    try:
        with session_scope() as session:
            release = session.get(Release, release_id)
            if release is None:
                return
            summary = release_summary(session, release)
        payload = {"text": release_text(summary), "summary": summary}
        url = get_settings().notify_url
        outcome: dict[str, Any] = {"sent": False, "attempts": 0, "response_code": None,
                                   "error": None if url else "no KERNELWATCH_NOTIFY_URL set",
                                   "url": url or None, "at": utcnow().isoformat(),
                                   "payload": payload}
        if url:
            outcome.update(post_json(url, payload), at=utcnow().isoformat())
            if not outcome["sent"]:
                log.warning("release %s: notification to %s failed: %s", summary["release"],
                            url, outcome["error"])
        with session_scope() as session:
            release = session.get(Release, release_id)
            if release is not None:
                release.details = {**(release.details or {}), "notification": outcome}
    except Exception:
        log.exception("release %s: notification failed", release_id)


@contextmanager
def local_receiver(status: int = 200) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A notification receiver on 127.0.0.1, for trying the release flow without a chat
    service (and for its tests and benchmarks): yields (url, received); every JSON body POSTed
    to the url is appended to ``received`` and answered with ``status``."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append(json.loads(body))
            self.send_response(status)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()
