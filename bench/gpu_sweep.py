"""The GPU evidence sweep: kernelwatch's real worker path (version environments from
worker/envs.py, the harness subprocess through worker/runner.py's HarnessRunner) on the
reference shapes, run twice, with FlashInfer's own timer on the same shapes for agreement.

    python bench/gpu_sweep.py --versions 0.6.18.post1 0.5.3 --wheelhouse .whl \
        --envs-dir /tmp/kw-envs --out OUT [--runs 2] [--suites decode,prefill,single] \
        [--agreement]

Prints per point: median, bootstrap 95% CI, CV, JIT and plan seconds; per suite and run the
wall time; the share of points with CV <= 1% (points slower than 20 us); whether the two runs
agree within their CIs; and each point's median against ``bench_gpu_time``'s. Raw harness
messages (with each request and the environment) go to ``OUT/raw-<label>.jsonl``:
bench/gpu_fixture.py turns them into a fixture the service imports. ``--report-only`` prints
the report again from saved files, e.g. the committed ones (summary written to ``--out``)::

    python bench/gpu_sweep.py --report-only --versions 0.7.2.post1 --no-torch --out /tmp/r \
        --raw tests/fixtures/gpu/raw/h200-0.7.2.post1.jsonl \
        --agreement-file tests/fixtures/gpu/raw/agreement-v7.jsonl

(call 4 of docs/gpu.md's evidence measured that agreement apart: ``--runs 0 --agreement``).

Needs only the standard library, numpy, torch and FlashInfer wheels (it runs on a GPU machine
without kernelwatch's service dependencies).
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.gpu_fixture import read_raw  # noqa: E402
from kernelwatch.core.series import clock_summary  # noqa: E402
from kernelwatch.core.stats import Summary, repeat_labels, summarize  # noqa: E402
from kernelwatch.worker import envs  # noqa: E402
from kernelwatch.worker.runner import HarnessRequest, HarnessRunner, harness_env  # noqa: E402
from kernelwatch_harness.catalogue import complete_params  # noqa: E402

HEADS = {"num_qo_heads": [32], "num_kv_heads": [8], "head_dim": [128], "dtype": ["bfloat16"]}
SUITES: dict[str, dict[str, Any]] = {
    "decode": {
        "kernel": "batch_decode",
        "backends": ["fa2", "auto"],
        "params": {
            "batch_size": [1, 16, 64, 256],
            "kv_len": [512, 2048, 8192, 32768],
            "page_size": [16],
            **HEADS,
        },
    },
    "prefill": {
        "kernel": "batch_prefill",
        "backends": ["fa2", "auto"],
        "params": {
            "batch_size": [1, 8],
            "qo_len": [512, 2048],
            "kv_len": [2048, 8192],
            "causal": [True],
            "page_size": [16],
            **HEADS,
        },
    },
    "tiny": {  # a smoke test of this script (also on CPU: --device cpu --suites tiny)
        "kernel": "batch_decode",
        "backends": ["fa2"],
        "params": {
            "batch_size": [1, 3],
            "kv_len": [64, 200],
            "page_size": [16],
            "kv_len_distribution": ["uniform"],
            **HEADS,
        },
    },
    "single": {
        "kernel": "single_decode",
        "backends": ["fa2"],
        "params": {"kv_len": [512, 2048, 8192, 32768, 131072], **HEADS},
    },
}
# The service's defaults (core.spec.Timing; tests/test_timing_plan.py keeps them equal): 30
# samples in 3 interleaved repeats of 10 after 5 warm-up replays.
TIMING = {"warmup": 5, "warmup_ms": 0.0, "clock_floor": 0.985, "iterations": 30, "repeats": 3,
          "cold_l2": True, "check_correctness": True}


# the report's columns for the optional configurations of gpu_agreement.py
EXTRA_HEADS = {"cupti": "cupti", "cupti30": "cupti30", "rot": "FI rot"}
AGREE_PCT = 3.0  # the agreement figure: medians within +-3 %


def delta_pct(ours: float, theirs: float) -> float:
    return 100 * (ours / theirs - 1)


def agrees(ours: float, theirs: float) -> bool:
    return abs(delta_pct(ours, theirs)) <= AGREE_PCT


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether two intervals (low, high) overlap: the issue's "two runs agree within their
    CIs" for two runs' CIs of one point."""
    return a[0] <= b[1] and b[0] <= a[1]


def ci(s: Summary) -> tuple[float, float]:
    return s.ci_low, s.ci_high


def grid(kernel: str, params: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Same order as core.spec.SweepSpec.grid (itertools.product over the params in order)."""
    names = list(params)
    return [
        complete_params(kernel, dict(zip(names, combo, strict=True)))
        for combo in itertools.product(*(params[n] for n in names))
    ]


def harness_for(version: str | None, envs_dir: str, wheelhouse: str) -> tuple[str, dict[str, str]]:
    """The interpreter and environment a job's harness gets for ``version``: its version env
    (built from ``wheelhouse`` if missing) with its own JIT cache; None: this python (torch)."""
    python = envs.build_env(version, envs_dir, wheelhouse) if version else Path(sys.executable)
    return str(python), harness_env(envs.harness_env(version, envs_dir))


def request_for(suite: str, backends: list[str], device: str = "cuda") -> HarnessRequest:
    s = SUITES[suite]
    points = list(enumerate(grid(s["kernel"], s["params"])))
    return HarnessRequest(s["kernel"], device, backends, dict(TIMING), points)


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


def short(kernel: str, p: dict[str, Any]) -> str:
    keys = ("batch_size", "qo_len", "kv_len") if kernel != "single_decode" else ("kv_len",)
    return " ".join(
        f"{k.split('_')[0][0]}{k.split('_')[1][0] if '_' in k else ''}={p[k]}"
        for k in keys
        if k in p
    )


def timer_from_wheel(wheel: Path, out: Path) -> dict[str, str]:
    """A FlashInfer wheel's ``flashinfer/testing/utils.py`` (its bench_gpu_time), extracted
    under ``out`` for gpu_agreement.py's ``rot_`` timing of releases without a cold-L2 graph
    timer; its version read from the wheel's name."""
    import zipfile

    version = wheel.name.split("-")[1]
    dest = out / f"timer-{version}"
    with zipfile.ZipFile(wheel) as z:
        z.extract("flashinfer/testing/utils.py", dest)
    return {"path": str((dest / "flashinfer" / "testing" / "utils.py").resolve()),
            "version": version}


def agreement(
    python: str, env: dict[str, str], request: HarnessRequest,
    timer_from: dict[str, str] | None = None,
) -> dict[tuple[int, str], dict[str, Any]]:
    body = json.loads(request.to_json(set()))
    if timer_from:
        body["timer_from"] = timer_from
    proc = subprocess.run(
        [python, str(REPO / "bench" / "gpu_agreement.py")],
        input=json.dumps(body),
        capture_output=True,
        text=True,
        env=env,
        cwd=str(REPO),
        timeout=900,
    )
    out = {}
    for line in proc.stdout.splitlines():
        try:
            m = json.loads(line)
        except json.JSONDecodeError:
            continue
        out[(int(m["point_index"]), str(m["backend"]))] = m
    if proc.returncode != 0:
        print(f"agreement run failed ({proc.returncode}): {proc.stderr[-1500:]}")
    return out


def load_saved(
    raw_paths: list[Path], agreement_file: Path | None
) -> tuple[
    dict[tuple[str, str, int], list[dict[str, Any]]],
    dict[tuple[str, str, int], float],
    dict[tuple[str, str], dict[tuple[int, str], dict[str, Any]]],
]:
    """A sweep's results, walls and agreement rows read back from the raw files it wrote
    (``raw-<label><tag>.jsonl``, ``agreement<tag>.jsonl``), for ``--report-only``: the report
    again from committed raw files, or from a run whose agreement was made apart."""
    results: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    walls: dict[tuple[str, str, int], float] = {}
    agree: dict[tuple[str, str], dict[tuple[int, str], dict[str, Any]]] = {}
    for run in read_raw([str(p) for p in raw_paths]):
        meta = run["meta"]
        key = (meta["label"], meta["suite"], int(meta["run"]))
        results[key] = run["points"]
        if "wall_seconds" in run:
            walls[key] = float(run["wall_seconds"])
    if agreement_file is not None and agreement_file.is_file():
        for line in agreement_file.read_text().splitlines():
            m = json.loads(line)
            agree.setdefault((m["label"], m["suite"]), {})[
                (int(m["point_index"]), str(m["backend"]))] = m
    return results, walls, agree


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--versions", nargs="*", default=["0.6.18.post1", "0.5.3"])
    ap.add_argument("--wheelhouse", default=str(REPO / ".whl"))
    ap.add_argument("--envs-dir", default="/tmp/kw-envs")
    ap.add_argument("--out", default="gpu-sweep-out")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--suites", default="decode,prefill,single")
    ap.add_argument(
        "--torch",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure torch-sdpa on every suite (worker's own python)",
    )
    ap.add_argument("--agreement", action="store_true")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--method", default="cuda_graph", choices=["cuda_graph", "cupti"],
                    help="the harness's timing method (timing.method); cupti needs cupti-python")
    ap.add_argument("--cold-l2-method", default="rotate",
                    choices=["rotate", "flush", "flush_clean"],
                    help="with --method cupti: rotate input copies, write a 2 x L2 buffer "
                         "before each call as FlashInfer's CUPTI timer does, or read one")
    ap.add_argument("--timer-from", type=Path,
                    help="with --agreement: a FlashInfer wheel whose graph timer (rotating "
                         "inputs) also times versions whose own graph timer has no cold L2")
    ap.add_argument("--tag", default="", help="suffix of the output files")
    ap.add_argument("--report-only", action="store_true",
                    help="measure nothing: the report from the raw files already in --out "
                         "(or --raw, --agreement-file)")
    ap.add_argument("--raw", nargs="*", type=Path, help="raw files for --report-only")
    ap.add_argument("--agreement-file", type=Path, help="agreement rows for --report-only")
    ap.add_argument("--repeats", type=int, default=TIMING["repeats"],
                    help="repeats per point (timing.repeats); the iterations are split over them")
    ap.add_argument("--iterations", type=int, default=TIMING["iterations"],
                    help="timed samples per point in all (timing.iterations)")
    ap.add_argument("--warmup-ms", type=float, default=TIMING["warmup_ms"],
                    help="time-based warm-up of calls >= 100 us (timing.warmup_ms); 0: off")
    ap.add_argument("--clock-floor", type=float, default=TIMING["clock_floor"],
                    help="samples under this fraction of the boost clock are retaken "
                         "(timing.clock_floor); 0: off")
    args = ap.parse_args()
    out = Path(args.out)
    TIMING["cold_l2_method"] = args.cold_l2_method
    TIMING["method"] = args.method
    TIMING["repeats"] = args.repeats
    TIMING["iterations"] = args.iterations
    TIMING["warmup_ms"] = args.warmup_ms
    TIMING["clock_floor"] = args.clock_floor
    out.mkdir(parents=True, exist_ok=True)
    suites = [s for s in args.suites.split(",") if s]

    labels: list[tuple[str, str | None]] = [(v, v) for v in args.versions]
    if args.torch:
        labels.append(("torch", None))
    if args.report_only:
        saved = load_saved(args.raw or sorted(out.glob(f"raw-*{args.tag}.jsonl")),
                           args.agreement_file or out / f"agreement{args.tag}.jsonl")
        report(*saved, suites, labels, args.runs, out, args.tag)
        return 0
    results: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    walls: dict[tuple[str, str, int], float] = {}
    agree: dict[tuple[str, str], dict[tuple[int, str], dict[str, Any]]] = {}
    timer_from = timer_from_wheel(args.timer_from, out) if args.timer_from else None
    for label, version in labels:
        t0 = time.perf_counter()
        python, env = harness_for(version, args.envs_dir, args.wheelhouse)
        build_s = time.perf_counter() - t0
        print(f"[{label}] env ready in {build_s:.1f} s: {python}", flush=True)
        with open(out / f"raw-{label}{args.tag}.jsonl", "w") as raw:
            for run in range(1, args.runs + 1):
                for suite in suites:
                    backends = ["torch-sdpa"] if version is None else SUITES[suite]["backends"]
                    req = request_for(suite, backends, args.device)
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
        if args.agreement and version:
            for suite in suites:
                agree[(label, suite)] = agreement(
                    python, env, request_for(suite, SUITES[suite]["backends"]), timer_from
                )
            with open(out / f"agreement{args.tag}.jsonl", "a") as fh:
                for (lab, suite), rows in agree.items():
                    if lab == label:
                        for m in rows.values():
                            fh.write(json.dumps({"label": lab, "suite": suite, **m}) + "\n")
    report(results, walls, agree, suites, labels, args.runs, out, args.tag)
    return 0


def report(
    results: dict[tuple[str, str, int], list[dict[str, Any]]],
    walls: dict[tuple[str, str, int], float],
    agree: dict[tuple[str, str], dict[tuple[int, str], dict[str, Any]]],
    suites: list[str],
    labels: list[tuple[str, str | None]],
    runs: int,
    out: Path,
    tag: str = "",
) -> None:
    lines: list[str] = []
    cv_ok = cv_n = cvw_ok = rep_ok = rep_n = med1_ok = discards = floor_missed = 0
    # agreement with bench_gpu_time per configuration: [within +-3%, compared]
    agreed: dict[str, list[int]] = {
        "same": [0, 0], "settled": [0, 0], "fi30": [0, 0], "default": [0, 0],
        "same_no_discard": [0, 0], "cupti": [0, 0], "cupti30": [0, 0], "rot": [0, 0],
        "either": [0, 0]}
    median = 0.0

    def present(key: str) -> bool:
        return any(r.get(f"{key}_median_us") for rows in agree.values() for r in rows.values())

    # FlashInfer's CUPTI timer's columns, where the agreement run had cupti-python; the
    # newer graph timer's, where the release's own has no cold L2 (gpu_agreement.py's rot_)
    extra = ((("cupti", "cupti30") if present("cupti") or present("cupti30") else ())
             + (("rot",) if present("rot") else ()))
    fi_keys = ("settled", "fi30", "default", *extra)

    def count(config: str, theirs: float) -> float:
        agreed[config][0] += agrees(median, theirs)
        agreed[config][1] += 1
        return delta_pct(median, theirs)

    for label, _ in labels:
        for suite in suites:
            kernel = SUITES[suite]["kernel"]
            pts = dict(enumerate(grid(kernel, SUITES[suite]["params"])))
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
                f"{'rep±%':>6}{'run2 med':>9}{'FI med':>9}{'Δ%':>6}{'FI rep±%':>9}"
                f"{'FI idle':>9}{'Δ%':>6}{'FI 30':>9}{'Δ%':>6}{'FI dflt':>9}{'Δ%':>6}"
                + "".join(f"{EXTRA_HEADS[k]:>9}{'Δ%':>6}" for k in extra)
                + f"{'CVw%':>6}{'MHz':>6}{'disc':>5}"
            )
            for key, m in sorted(by_run.get(1, {}).items()):
                s = stats_of(m)
                row = (
                    f"{short(kernel, pts[key[0]]):<22}{key[1]:<11}"
                    f"{m.get('resolved_backend')!s:<11}{m['status']:<11}"
                )
                if s is None:
                    lines.append(row + f"  {str(m.get('error'))[:90]}")
                    continue
                median = s.median
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
                fi = agree.get((label, suite), {}).get(key)
                if fi and fi.get("median_us"):
                    row += f"{fi['median_us']:>9.2f}{count('same', fi['median_us']):>6.1f}"
                    if disc == 0:  # no sample of ours was under the clock floor
                        count("same_no_discard", fi["median_us"])
                    row += f"{spread_pct(fi.get('repeat_medians_us') or []):>9.2f}"
                    for k in fi_keys:
                        if fi.get(f"{k}_median_us"):
                            d = count(k, fi[f"{k}_median_us"])
                            row += f"{fi[f'{k}_median_us']:>9.2f}{d:>6.1f}"
                        else:
                            row += f"{'':>15}"
                    if fi.get("settled_median_us") and fi.get("cupti_median_us"):
                        # FlashInfer's two timers differ by up to 18 % on light points
                        # (bench/gpu_timers.py): within 3 % of either of them
                        agreed["either"][1] += 1
                        agreed["either"][0] += any(
                            agrees(median, fi[k])
                            for k in ("settled_median_us", "cupti_median_us", "rot_median_us")
                            if fi.get(k))
                else:
                    row += " " * (68 + 15 * len(extra))
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
    for config, words in (
        ("same", "on the harness's schedule (its warm-up, samples per repeat, repeats)"),
        ("settled", "on the harness's schedule, the GPU idle for the harness's recovery time "
                    "before each burst"),
        ("fi30", "with flashinfer_benchmark.py's 5 dry runs + 30 timed replays"),
        ("default", "as shipped (also its 10-call graphs)"),
        ("same_no_discard", "on the harness's schedule, points where the power limiter did not "
                            "act in the harness's bursts (no sample under the clock floor)"),
        ("cupti", "with CUPTI (L2 flushed before every call), on the harness's schedule with "
                  "its recovery idle"),
        ("cupti30", "with CUPTI as flashinfer_benchmark.py runs it (5 dry runs + 30 "
                    "iterations, L2 flushed before every call)"),
        ("rot", "with the graph timer and rotated inputs of a newer release's testing.utils "
                "(the release's own graph timer has no cold L2), on the harness's schedule "
                "with its recovery idle"),
        ("either", "with either of its timers (graph with the recovery idle, or CUPTI)"),
    ):
        if agreed[config][1]:
            ok, n = agreed[config]
            lines.append(f"median within ±3% of bench_gpu_time {words}: {ok}/{n}")
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
