"""Where a release's time went, from the release flow's own output (``release_flow.json``,
written by bench/regression_gpu_release.py, or a release fixture made from it): the builds
each GPU tag's node ran and when each ended, when the points were stored, when the
comparison came, how far the confirmation got and when the notification went out, all in
seconds after the trigger (the release jobs' creation).

    python bench/release_timeline.py \
        tests/fixtures/gpu/release/release-0.7.4-vs-0.6.18.post1-h100-whole-suite.json.gz

Prints figures only; nothing is measured here (the run measured them).
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from kernelwatch.core.fixtures import read_file


def _at(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    when = dt.datetime.fromisoformat(text)
    return when.replace(tzinfo=None) if when.tzinfo else when  # stored times are UTC


def timeline(flow: dict[str, Any]) -> list[str]:
    """The lines the command prints for one flow."""
    release = flow.get("release") or {}
    jobs = [j for j in flow.get("jobs", []) if j["job"].get("kind") == "release"]
    starts = [t for j in jobs if (t := _at(j["job"].get("created_at")))]
    if not starts:
        return [f"release {release.get('version')}: no release job"]
    t0 = min(starts)

    def after(when: str | None) -> float | None:
        t = _at(when)
        return None if t is None else (t - t0).total_seconds()

    lines = [f"release {release.get('version')} vs {release.get('previous_version')} "
             f"({release.get('status')}): triggered {t0.isoformat(sep=' ', timespec='seconds')}"]
    details = release.get("details") or {}
    for tag, record in sorted((details.get("prebuild") or {}).items()):
        builds = sorted(record.get("builds") or [], key=lambda b: b.get("ended_after") or 0)
        lines.append(f"{tag}: {record.get('runs')} run(s) built side by side, "
                     f"{record.get('wall_seconds', 0):.0f} s wall, "
                     f"{record.get('jit_seconds', 0):.0f} s of JIT")
        if builds:
            longest = max(builds, key=lambda b: b.get("wall_seconds") or 0)
            lines.append(f"  longest build: {longest['kernel']} {longest['version']}, "
                         f"{longest['wall_seconds']:.0f} s, ended after "
                         f"{longest.get('ended_after') or 0:.0f} s")
        for b in builds:
            lines.append(f"  {b['kernel']:<36} {b['version']:<14} built in "
                         f"{b['wall_seconds']:6.0f} s, ended after "
                         f"{b.get('ended_after') or 0:6.0f} s")
        last_build = max((b.get("ended_after") or 0 for b in builds), default=None)
        stored = sorted(s for j in jobs for r in j["runs"] for p in r["points"]
                        if (s := after(p.get("created_at"))) is not None)
        if stored and last_build is not None:
            before = [s for s in stored if s < last_build]
            lines.append(f"  points stored: {len(stored)}; {len(before)} before the last build "
                         f"ended" + (f", the last of those after {before[-1]:.0f} s"
                                     if before else ""))
    for comparison in flow.get("comparisons", []):
        regs = comparison.get("regressions") or []
        made = min((s for r in regs if (s := after(r.get("created_at"))) is not None),
                   default=None)
        counts = (comparison.get("summary") or {}).get("counts") or {}
        states = sorted({str(r.get("state")) for r in regs})
        lines.append(f"comparison {comparison.get('id')} ({comparison.get('gpu_sku')}): "
                     + (f"{made:.0f} s after the trigger, " if made is not None else "")
                     + ", ".join(f"{v} {k}" for k, v in counts.items() if v)
                     + (f"; regressions {', '.join(states)}" if regs else ""))
    for j in flow.get("jobs", []):
        if j["job"].get("kind") != "confirm":
            continue
        runs = j["runs"]
        done = [r for r in runs if r.get("status") == "succeeded"]
        began = after(j["job"].get("started_at"))
        lines.append(f"confirmation of {j['job']['kernel']}: {len(done)} of {len(runs)} runs "
                     f"measured" + (f", from {began:.0f} s" if began is not None else "")
                     + f" ({j['job'].get('status')})")
    sent = (details.get("notification") or {}).get("at")
    if sent:
        lines.append(f"notification: {after(sent):.0f} s after the trigger")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("flows", nargs="+", type=Path, help="release_flow.json files (or .json.gz)")
    args = ap.parse_args()
    for path in args.flows:
        print("\n".join(timeline(read_file(path))))


if __name__ == "__main__":
    main()
