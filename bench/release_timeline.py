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
import heapq
import math
import statistics
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
        lines += _measuring(jobs, tag, builds, after)
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
    released = _medians(jobs)
    for j in flow.get("jobs", []):
        if j["job"].get("kind") != "confirm":
            continue
        runs = j["runs"]
        done = [r for r in runs if r.get("status") == "succeeded"]
        began = after(j["job"].get("started_at"))
        lines.append(f"confirmation of {j['job']['kernel']}: {len(done)} of {len(runs)} runs "
                     f"measured" + (f", from {began:.0f} s" if began is not None else "")
                     + f" ({j['job'].get('status')})")
        lines += _rounds(j, release.get("version"), released)
    sent = (details.get("notification") or {}).get("at")
    if sent:
        lines.append(f"notification: {after(sent):.0f} s after the trigger")
    return lines


def _medians(jobs: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    """Each point's median by (series, FlashInfer version), over the given jobs' runs."""
    return {(p["series_key"], r["flashinfer_version"]): float(p["median_us"])
            for j in jobs for r in j["runs"] for p in r["points"]
            if p.get("status") == "ok" and p.get("median_us") is not None}


def _rounds(job: dict[str, Any], version: str | None,
            released: dict[tuple[str, str], float]) -> list[str]:
    """Each flagged series of a confirm job: the median over its rounds of the new release's
    medians against the previous one's (a summary of what the confirmation measured; its
    verdict is the paired comparison's, kernelwatch.worker.confirm.settle), and how far the
    release's own run of each version (``released``, measured while builds may still have
    run) read from that version's rounds."""
    sides: dict[str, dict[bool, list[float]]] = {}
    params: dict[str, dict[str, Any]] = {}
    versions: dict[str, dict[bool, str]] = {}
    for r in job["runs"]:
        for p in r["points"]:
            if p.get("status") == "ok" and p.get("median_us") is not None:
                new = r["flashinfer_version"] == version
                side = sides.setdefault(p["series_key"], {True: [], False: []})
                side[new].append(float(p["median_us"]))
                params[p["series_key"]] = p["params"]
                versions.setdefault(p["series_key"], {})[new] = r["flashinfer_version"]
    out = []
    for key, side in sides.items():
        if side[True] and side[False]:
            shown = {k: v for k, v in params[key].items()
                     if k in ("batch_size", "kv_len", "num_tokens", "use_tensor_cores")}
            ratio = statistics.median(side[True]) / statistics.median(side[False])
            line = (f"  {shown}: {ratio:.3f} over {len(side[False])}+{len(side[True])} "
                    "rounds (median of medians)")
            off = [f"{(released[k] / statistics.median(side[new]) - 1) * 100:+.1f} %"
                   for new in (False, True)
                   if (k := (key, versions[key][new])) in released]
            if len(off) == 2:
                line += f"; the release's runs read {off[0]} and {off[1]} from them"
            out.append(line)
    return out


def series_differences(flow: dict[str, Any], other: dict[str, Any], largest: int = 6
                       ) -> list[str]:
    """The same series in two flows' release runs (two nodes, say): how far each point's
    median in ``flow`` is from ``other``'s, as the median and 90th percentile of the absolute
    differences, and the largest."""
    def medians(f: dict[str, Any]) -> dict[tuple[str, str], float]:
        return _medians([j for j in f.get("jobs", []) if j["job"].get("kind") == "release"])

    mine, theirs = medians(flow), medians(other)
    kernels = {(p["series_key"], r["flashinfer_version"]): (p["kernel"], p["backend"])
               for j in flow.get("jobs", []) for r in j["runs"] for p in r["points"]}
    diffs = sorted(((mine[k] / theirs[k] - 1) * 100, k) for k in mine if k in theirs)
    if not diffs:
        return ["against the other flow: no series in common"]
    size = sorted(abs(d) for d, _ in diffs)
    p90 = size[max(0, math.ceil(0.9 * len(size)) - 1)]
    lines = [f"against the other flow: {len(diffs)} series in common, median difference "
             f"{statistics.median(size):.1f} %, 90th percentile {p90:.1f} %; the largest:"]
    for d, key in sorted(diffs, key=lambda x: -abs(x[0]))[:largest]:
        kernel, backend = kernels[key]
        lines.append(f"  {d:+.1f} %  {kernel} {backend} {key[1]} ({key[0][:8]})")
    return lines


def _measuring(jobs: list[dict[str, Any]], tag: str, builds: list[dict[str, Any]],
               after: Any) -> list[str]:
    """The tag's node measures one run at a time: how long it measured, how much of that the
    cross-check took (flashinfer_benchmark.py's own routine per point, ``wall_s``), and, by
    replaying the same order with each run shortened by its cross-check, when the last run
    would have ended without it (the release flow's default). Then the builds' start orders
    the node can choose, replayed (``_replay``). Replays are estimates from this run's
    recorded times: each run is measured when the one before it ended and its own build
    had ended."""
    built = {b["run_id"]: b.get("ended_after") or 0.0 for b in builds if "run_id" in b}
    runs = sorted((r for j in jobs for r in j["runs"]
                   if r.get("target") == tag and after(r.get("finished_at")) is not None),
                  key=lambda r: after(r["finished_at"]))
    if not runs:
        return []
    checked = {r["id"]: sum((p.get("crosscheck") or {}).get("wall_s") or 0.0
                            for p in r["points"]) for r in runs}
    took: dict[int, float] = {}
    prev, first = 0.0, None
    for r in runs:
        began = max(after(r.get("started_at")) or 0.0, prev, built.get(r["id"], 0.0))
        prev = after(r["finished_at"])
        first = began if first is None else first
        took[r["id"]] = prev - began
    without = {rid: took[rid] - checked[rid] for rid in took}
    heaviest = max(runs, key=lambda r: checked[r["id"]])
    kernel = next((p["kernel"] for p in heaviest["points"]), "?")
    lines = [f"  measuring: {len(runs)} run(s) one at a time, from {first:.0f} s to {prev:.0f} s, "
             f"{sum(took.values()):.0f} s busy; the cross-check took "
             f"{sum(checked.values()):.0f} s of it (most in one run: {kernel} "
             f"{heaviest['flashinfer_version']}, {checked[heaviest['id']]:.0f} s)",
             f"  without the cross-check (estimate, this order replayed): the last run would "
             f"have ended after {_queue([r['id'] for r in runs], built, without):.0f} s"]
    return lines + _replay(builds, built, took, without)


def _queue(order: list[int], built: dict[int, float], took: dict[int, float]) -> float:
    """When the last of ``order`` is measured, one at a time, none before its build ended."""
    t = 0.0
    for rid in order:
        t = max(t, built.get(rid, 0.0)) + took[rid]
    return t


def _replay(builds: list[dict[str, Any]], built: dict[int, float], took: dict[int, float],
            without: dict[int, float]) -> list[str]:
    """The builds started in other orders, as many at a time as ran at once here, each taking
    the time it took here, and each run measured as its build ends (with and without the
    cross-check): as the node ran them, longest first, and alternating the longest and the
    shortest (``kernelwatch.worker.prebuild.alternate``, what a node with build history does).
    A build's time depends on what builds beside it, so these are estimates; the first line
    says how close the model comes to this run."""
    from kernelwatch.worker.prebuild import alternate

    seconds = {b["run_id"]: float(b["wall_seconds"]) for b in builds
               if "run_id" in b and b["run_id"] in took}
    if not seconds:
        return []
    began = {rid: built.get(rid, 0.0) - seconds[rid] for rid in seconds}
    # how many ran at once: a build's recorded start can read a second or two before the end
    # of the one whose slot it took (its wall time counts its harness's start)
    width = max(sum(1 for o in seconds if began[o] <= began[r] + 2 < began[o] + seconds[o])
                for r in seconds)
    longest = sorted(seconds, key=lambda r: -seconds[r])
    orders = {"as run": sorted(seconds, key=lambda r: began[r]), "longest first": longest,
              "alternating longest and shortest": alternate(longest)}
    lines = [f"  build orders replayed ({width} at a time, the recorded times):"]
    for name, order in orders.items():
        free = [0.0] * width
        ended: dict[int, float] = {}
        for rid in order:
            start = heapq.heappop(free)
            ended[rid] = start + seconds[rid]
            heapq.heappush(free, ended[rid])
        by_end = sorted(ended, key=lambda r: ended[r])
        lines.append(f"    {name}: builds end after {max(ended.values()):.0f} s; measuring ends "
                     f"after {_queue(by_end, ended, took):.0f} s with the cross-check, "
                     f"{_queue(by_end, ended, without):.0f} s without")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("flows", nargs="+", type=Path, help="release_flow.json files (or .json.gz)")
    ap.add_argument("--against", type=Path, metavar="FLOW",
                    help="another flow of the same releases (another node): how far the same "
                         "series read in the two")
    args = ap.parse_args()
    other = read_file(args.against) if args.against else None
    for path in args.flows:
        flow = read_file(path)
        print("\n".join(timeline(flow)))
        if other is not None:
            print("\n".join(series_differences(flow, other)))


if __name__ == "__main__":
    main()
