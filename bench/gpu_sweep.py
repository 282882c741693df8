"""The GPU sweep benchmark: kernelwatch's real worker path (version environments from
kernelwatch.worker.envs, the harness subprocess through kernelwatch.worker.runner's
HarnessRunner) on the reference shapes (kernelwatch_harness.families.attention.suites), each
suite run ``--runs`` times in a row.

    python bench/gpu_sweep.py --versions 0.6.18.post1 --wheelhouse .whl \
        --envs-dir /tmp/kw-envs --out OUT [--runs 2] [--suites decode,prefill,single]

Prints per point: median, bootstrap 95% CI, CV, JIT and plan seconds, the repeats' spread,
run 2's median, the within-repeat CV and the probe's SM clock; per suite and run the wall
time; the share of points with CV <= 1% (points slower than 20 us); and whether two runs agree
within their CIs. Raw harness messages (with each request and the environment) go to
``OUT/raw-<label><tag>.jsonl`` (scripts/fixtures/gpu_fixture.py turns them into a fixture the
service imports), the report to ``OUT/summary<tag>.txt``. ``--report-only`` prints the report
again from raw files already written.

Needs numpy, scipy, torch and the FlashInfer wheels besides kernelwatch and kernelwatch_harness
installed without their service dependencies (scripts/gpu-check sweep sets that up).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from kernelwatch.core.series import clock_summary
from kernelwatch.core.stats import Summary, repeat_labels, summarize
from kernelwatch.worker import envs
from kernelwatch.worker.runner import HarnessRequest, HarnessRunner, harness_env
from kernelwatch_harness.families.attention.suites import SUITES, TIMING, grid, short


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether two intervals (low, high) overlap: "two runs agree within their
    CIs" for two runs' CIs of one point."""
    return a[0] <= b[1] and b[0] <= a[1]


def ci(s: Summary) -> tuple[float, float]:
    return s.ci_low, s.ci_high


def harness_for(version: str | None, envs_dir: str, wheelhouse: str) -> tuple[str, dict[str, str]]:
    """The interpreter and environment a job's harness gets for ``version``: its version env
    (built from ``wheelhouse`` if missing) with its own JIT cache; None: this python (torch)."""
    python = envs.build_env(version, envs_dir, wheelhouse) if version else Path(sys.executable)
    return str(python), harness_env(envs.harness_env(version, envs_dir))


def request_for(suite: str, backends: list[str], timing: dict[str, Any],
                device: str = "cuda") -> HarnessRequest:
    s = SUITES[suite]
    points = list(enumerate(grid(s["kernel"], s["params"], backends)))
    return HarnessRequest(s["kernel"], device, backends, dict(timing), points)


def run_suite(
    python: str, env: dict[str, str], request: HarnessRequest, raw: Any, meta: dict[str, Any]
) -> tuple[list[dict[str, Any]], float]:
    raw.write(
        json.dumps({"type": "request", **meta, "request": json.loads(request.to_json(set()))})
        + "\n"
    )
    t0 = time.perf_counter()
    msgs = []
    for msg in HarnessRunner(python, request, env).messages():
        msgs.append(msg)
        raw.write(json.dumps(msg) + "\n")
        raw.flush()
    wall = time.perf_counter() - t0
    raw.write(json.dumps({"type": "wall", **meta, "wall_seconds": wall}) + "\n")
    raw.flush()  # a run killed at the call's limit keeps the suites it finished, walls too
    return msgs, wall


def stats_of(m: dict[str, Any]) -> Summary | None:
    """A point message's statistics as the service stores them (two-stage CI over repeats)."""
    if not m.get("samples_us"):
        return None
    return summarize(m["samples_us"], repeat_labels(m.get("repeat_sizes"), len(m["samples_us"])))


def repeat_medians(m: dict[str, Any]) -> list[float]:
    return [r["median_us"] for r in (m.get("telemetry") or {}).get("repeats") or []]


def within_cv(m: dict[str, Any]) -> float:
    """CV of the samples about their own repeat's mean, pooled over the repeats: the timer's
    noise, without the repeat-to-repeat placement and clock drift that ``rep±%`` shows."""
    samples = m.get("samples_us") or []
    sizes = m.get("repeat_sizes") or [len(samples)]
    sq, i = 0.0, 0
    for n in sizes:
        part = samples[i : i + n]
        i += n
        mean = sum(part) / len(part)
        sq += sum((x - mean) ** 2 for x in part)
    dof = len(samples) - len(sizes)
    return (sq / dof) ** 0.5 / (sum(samples) / len(samples)) if dof > 0 else float("nan")


def clock_of(m: dict[str, Any]) -> tuple[float, int, bool]:
    """Median probe clock over the repeats, samples discarded under the floor, floor met."""
    c = clock_summary(m.get("telemetry"))
    if c is None:
        return float("nan"), 0, True
    return c.median_mhz or float("nan"), c.discarded, c.floor_met


def spread_pct(medians: list[float]) -> float:
    """Half the range of the repeats' medians, % of their middle: the GPU-state drift."""
    if len(medians) < 2:
        return float("nan")
    mid = sorted(medians)[len(medians) // 2]
    return 50.0 * (max(medians) - min(medians)) / mid


def load_saved(
    raw_paths: list[Path],
) -> tuple[dict[tuple[str, str, int], list[dict[str, Any]]], dict[tuple[str, str, int], float]]:
    """A sweep's results and walls read back from the raw files it wrote
    (``raw-<label><tag>.jsonl``), for ``--report-only``."""
    from kernelwatch.core.fixtures import read_raw

    results: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    walls: dict[tuple[str, str, int], float] = {}
    for run in read_raw(raw_paths):
        meta = run["meta"]
        key = (meta["label"], meta["suite"], int(meta["run"]))
        results[key] = run["points"]
        if "wall_seconds" in run:
            walls[key] = float(run["wall_seconds"])
    return results, walls


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--versions", nargs="*", default=["0.6.18.post1", "0.5.3"])
    ap.add_argument("--wheelhouse", default=".whl")
    ap.add_argument("--envs-dir", default="/tmp/kw-envs")
    ap.add_argument("--out", default="gpu-sweep-out")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--suites", default="decode,prefill,single")
    ap.add_argument(
        "--torch",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure torch-sdpa on every suite (this python's torch)",
    )
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--method", default="cuda_graph", choices=["cuda_graph", "cupti"],
                    help="the harness's timing method (timing.method); cupti needs cupti-python")
    ap.add_argument("--cold-l2-method", default="rotate",
                    choices=["rotate", "flush", "flush_clean"],
                    help="with --method cupti: rotate input copies, write a 2 x L2 buffer "
                         "before each call as FlashInfer's CUPTI timer does, or read one")
    ap.add_argument("--tag", default="", help="suffix of the output files")
    ap.add_argument("--report-only", action="store_true",
                    help="measure nothing: the report from the raw files already in --out "
                         "(or --raw)")
    ap.add_argument("--raw", nargs="*", type=Path, help="raw files for --report-only")
    ap.add_argument("--repeats", type=int, default=TIMING["repeats"],
                    help="repeats per point (timing.repeats); the iterations are split over them")
    ap.add_argument("--iterations", type=int, default=TIMING["iterations"],
                    help="timed samples per point in all (timing.iterations)")
    ap.add_argument("--warmup-ms", type=float, default=TIMING["warmup_ms"],
                    help="time-based warm-up of calls >= 100 us (timing.warmup_ms); 0: off")
    ap.add_argument("--clock-floor", type=float, default=TIMING["clock_floor"],
                    help="samples under this fraction of the boost clock are retaken "
                         "(timing.clock_floor); 0: off")
    args = ap.parse_args(argv)
    out = Path(args.out)
    timing = {**TIMING, "cold_l2_method": args.cold_l2_method, "method": args.method,
              "repeats": args.repeats, "iterations": args.iterations,
              "warmup_ms": args.warmup_ms, "clock_floor": args.clock_floor}
    out.mkdir(parents=True, exist_ok=True)
    suites = [s for s in args.suites.split(",") if s]
    unknown = sorted(set(suites) - set(SUITES))
    if unknown:
        ap.error(f"unknown suites {unknown}; known: {sorted(SUITES)}")

    labels: list[tuple[str, str | None]] = [(v, v) for v in args.versions]
    if args.torch:
        labels.append(("torch", None))
    if args.report_only:
        saved = load_saved(args.raw or sorted(out.glob(f"raw-*{args.tag}.jsonl")))
        report(*saved, suites, labels, args.runs, out, args.tag)
        return 0
    results: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    walls: dict[tuple[str, str, int], float] = {}
    for label, version in labels:
        t0 = time.perf_counter()
        python, env = harness_for(version, args.envs_dir, args.wheelhouse)
        build_s = time.perf_counter() - t0
        print(f"[{label}] env ready in {build_s:.1f} s: {python}", flush=True)
        with open(out / f"raw-{label}{args.tag}.jsonl", "w") as raw:
            for run in range(1, args.runs + 1):
                for suite in suites:
                    backends = ["torch-sdpa"] if version is None else SUITES[suite]["backends"]
                    req = request_for(suite, backends, timing, args.device)
                    meta = {
                        "label": label,
                        "flashinfer_version": version,
                        "suite": suite,
                        "run": run,
                    }
                    msgs, wall = run_suite(python, env, req, raw, meta)
                    results[(label, suite, run)] = msgs
                    walls[(label, suite, run)] = wall
                    print(
                        f"[{label}] run {run} {suite}: {wall:.1f} s wall, "
                        f"{sum(m.get('type') == 'point' for m in msgs)} points",
                        flush=True,
                    )
    report(results, walls, suites, labels, args.runs, out, args.tag)
    return 0


def report(
    results: dict[tuple[str, str, int], list[dict[str, Any]]],
    walls: dict[tuple[str, str, int], float],
    suites: list[str],
    labels: list[tuple[str, str | None]],
    runs: int,
    out: Path,
    tag: str = "",
) -> None:
    lines: list[str] = []
    cv_ok = cv_n = cvw_ok = rep_ok = rep_n = med1_ok = discards = floor_missed = 0
    for label, _ in labels:
        for suite in suites:
            kernel = SUITES[suite]["kernel"]
            # a point's label: its shape, the same for every backend
            pts = dict(enumerate(grid(kernel, SUITES[suite]["params"], ["auto"])))
            by_run = {
                r: {
                    (m["point_index"], m["backend"]): m
                    for m in results.get((label, suite, r), [])
                    if m.get("type") == "point"
                }
                for r in range(1, runs + 1)
            }
            lines.append(
                f"== {label} {suite} ({kernel}); wall per run: "
                + ", ".join(
                    f"{walls.get((label, suite, r), float('nan')):.1f} s"
                    for r in range(1, runs + 1)
                )
            )
            lines.append(
                f"{'point':<22}{'backend':<11}{'resolved':<11}{'status':<11}"
                f"{'median us':>10}{'CI95':>19}{'CV%':>6}{'jit s':>7}{'plan ms':>8}"
                f"{'rep±%':>6}{'run2 med':>9}{'CVw%':>6}{'MHz':>6}{'disc':>5}"
            )
            for key, m in sorted(by_run.get(1, {}).items()):
                s = stats_of(m)
                row = (
                    f"{short(kernel, pts[key[0]]['auto']):<22}{key[1]:<11}"
                    f"{m.get('resolved_backend')!s:<11}{m['status']:<11}"
                )
                if s is None:
                    lines.append(row + f"  {str(m.get('error'))[:90]}")
                    continue
                cvw = within_cv(m)
                mhz, disc, met = clock_of(m)
                discards += disc
                floor_missed += not met
                if s.median > 20:
                    cv_n += 1
                    cv_ok += s.cv <= 0.01
                    cvw_ok += cvw <= 0.01
                row += (
                    f"{s.median:>10.2f} {f'[{s.ci_low:.2f},{s.ci_high:.2f}]':>19}"
                    f"{100 * s.cv:>6.2f}{(m.get('jit_seconds') or 0):>7.2f}"
                    f"{1000 * (m.get('plan_seconds') or 0):>8.2f}"
                    f"{spread_pct(repeat_medians(m)):>6.2f}"
                )
                m2 = by_run.get(2, {}).get(key)
                s2 = stats_of(m2) if m2 else None
                if s2 is not None:
                    rep_n += 1
                    rep_ok += overlap(ci(s), ci(s2))
                    med1_ok += abs(s2.median / s.median - 1) <= 0.01
                    row += f"{s2.median:>9.2f}"
                else:
                    row += f"{'':>9}"
                row += f"{100 * cvw:>6.2f}{mhz:>6.0f}{disc:>5}{'' if met else ' floor missed'}"
                lines.append(row)
    lines.append(f"CV <= 1% for points > 20 us (samples pooled over repeats): {cv_ok}/{cv_n}")
    lines.append(f"within-repeat CV (CVw) <= 1% for points > 20 us: {cvw_ok}/{cv_n}")
    lines.append(
        f"samples discarded under the clock floor and retaken: {discards}; "
        f"points that kept samples under it (floor missed): {floor_missed}"
    )
    lines.append(f"run 1 and run 2 CIs overlap: {rep_ok}/{rep_n}")
    lines.append(f"run 1 and run 2 medians within 1%: {med1_ok}/{rep_n}")
    for label, _ in labels:
        for r in range(1, runs + 1):
            if (label, "decode", r) in walls:
                reps = [
                    rep
                    for m in results[(label, "decode", r)]
                    if m.get("type") == "point"
                    for rep in (m.get("telemetry") or {}).get("repeats") or []
                ]
                own = sum(rep.get("seconds") or 0.0 for rep in reps)
                warm = sum((rep.get("warmup") or {}).get("gpu_ms") or 0.0 for rep in reps)
                lines.append(
                    f"decode sweep (16 points x {len(SUITES['decode']['backends'])} "
                    f"backends) {label} run {r}: {walls[(label, 'decode', r)]:.1f} s; "
                    f"its repeats {own:.1f} s, of which warm-up {warm / 1000:.1f} s of GPU time"
                )
    text = "\n".join(lines)
    print(text)
    (out / f"summary{tag}.txt").write_text(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
