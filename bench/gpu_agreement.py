"""How often kernelwatch agrees with FlashInfer's own benchmark, measured through the service:
``kernelwatch up`` (embedded: SQLite, a local worker per GPU, FlashInfer environments built
from a wheelhouse), ``kernelwatch submit SPEC --wait`` with ``crosscheck: true``, then the
stored points and their cross-checks. Shapes are random draws from the catalogue's ranges,
with a seed that is printed (``--seed`` repeats a draw), so that no test, fixture or earlier
run chose them. Prints, per FlashInfer version and routine, the share of points within 3% of
flashinfer_benchmark.py, each miss with its stored causes, and the cost: the cross-check's
wall time per point against kernelwatch's own measurement time per point.

On a GPU node, from the repository root (FlashInfer wheels in .whl/, the service's wheels in
.whl/svc/, flashinfer-benchmarks-<version>.tar.gz for each version in .whl/ when the node has
no network), ``scripts/gpu-check agreement --version V`` installs what it needs and runs

    python bench/gpu_agreement.py --versions 0.6.18.post1,0.7.4 --wheelhouse .whl --out OUT

Writes OUT/agreement.json (every point: parameters, kernelwatch's median and CI, the tool's
median, std, timer, clock, command, agreement, causes) and OUT/service.log.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
KW = [sys.executable, "-m", "kernelwatch"]

# The routines of the agreement figure: (name, kernel, backends, fixed params). Backends are
# those FlashInfer runs on Hopper for that wrapper in every version measured.
ROUTINES: list[tuple[str, str, list[str], dict[str, Any]]] = [
    ("decode", "batch_decode", ["fa2"], {"use_tensor_cores": False, "kv_layout": "HND"}),
    ("decode-tc", "batch_decode", ["fa2", "fa3"], {"use_tensor_cores": True,
                                                   "kv_layout": "HND"}),
    ("prefill-paged", "batch_prefill", ["fa2", "fa3"], {"causal": True, "kv_layout": "HND",
                                                        "use_cuda_graph": None}),
    ("prefill-ragged", "batch_prefill_ragged", ["fa2", "fa3"], {"causal": True,
                                                               "use_cuda_graph": None}),
    ("mla-decode", "mla_decode", ["fa2", "fa3"], {}),
]
HEADS = [(32, 8), (32, 32), (64, 8), (16, 4), (28, 4), (8, 1)]


def log_uniform(rng: random.Random, lo: int, hi: int) -> int:
    return round(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def draw(rng: random.Random, kernel: str, n: int) -> dict[str, list[Any]]:
    """n shapes' worth of a grid: two values per swept dimension (2 x 2 = 4 points per
    routine for n=4), drawn log-uniformly inside what one H200 holds comfortably."""
    per = max(1, round(math.sqrt(n)))
    batch = sorted({log_uniform(rng, 1, 256) for _ in range(per)})
    kv = sorted({log_uniform(rng, 256, 16384) for _ in range(per)})
    params: dict[str, list[Any]] = {"batch_size": batch, "kv_len": kv}
    if kernel == "mla_decode":
        params["num_qo_heads"] = [rng.choice([16, 32, 64, 128])]
        params["page_size"] = [rng.choice([1, 16, 64])]
        return params
    qo, kvh = rng.choice(HEADS)
    params |= {"num_qo_heads": [qo], "num_kv_heads": [kvh], "head_dim": [128]}
    if kernel != "batch_prefill_ragged":
        params["page_size"] = [rng.choice([16, 32, 64])]
    if kernel in ("batch_prefill", "batch_prefill_ragged"):
        params["qo_len"] = [min(log_uniform(rng, 16, 2048), min(kv))]
    return params


def specs(seed: int, versions: list[str], target: str, n: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for name, kernel, backends, fixed in ROUTINES:
        params = draw(rng, kernel, n)
        for k, v in fixed.items():
            if v is not None:
                params[k] = [v]
        # flashinfer_benchmark.py builds fa2 prefill without the CUDA-graph plan mode and the
        # others with it: one spec per plan mode, so each backend's point is the same experiment.
        groups = ([(b, {"use_cuda_graph": [b != "fa2"]}) for b in backends]
                  if "use_cuda_graph" in fixed else [(None, {})])
        for backend, extra in groups:
            out.append({"name": f"agreement-{name}{'-' + backend if backend else ''}",
                        "kernel": kernel, "backends": [backend] if backend else backends,
                        "flashinfer_versions": list(versions), "targets": [target],
                        "params": {**params, **extra}, "crosscheck": True,
                        "timing": {"check_correctness": True}})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--versions", default="0.6.18.post1,0.7.4")
    ap.add_argument("--seed", type=int, default=None, help="default: drawn, and printed")
    ap.add_argument("--points", type=int, default=4, help="shapes per routine (default 4)")
    ap.add_argument("--target", default="h200")
    ap.add_argument("--wheelhouse", default=str(ROOT / ".whl"))
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/kw-out")))
    ap.add_argument("--dry-run", action="store_true", help="print the specs and stop")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    print(f"seed {seed} (repeat this draw with --seed {seed})", flush=True)
    versions = [v.strip() for v in args.versions.split(",") if v.strip()]
    sweeps = specs(seed, versions, args.target, args.points)
    if args.dry_run:
        print(yaml.safe_dump(sweeps, sort_keys=False))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="kw-agreement-"))
    env = {**os.environ, "KERNELWATCH_DATA_DIR": str(data_dir), "KERNELWATCH_DATABASE_URL": "",
           "KERNELWATCH_BROKER_URL": "",
           "KERNELWATCH_WHEELHOUSE": str(Path(args.wheelhouse).resolve())}
    t0 = time.monotonic()
    log = open(args.out / "service.log", "ab")  # noqa: SIM115 (the service keeps it)
    up = subprocess.Popen([*KW, "up", "--no-dashboard"], env=env, cwd=ROOT, stdout=log,
                          stderr=subprocess.STDOUT)
    job_ids: list[int] = []
    try:
        _wait_for_api(env)
        for spec in sweeps:
            path = data_dir / f"{spec['name']}.yaml"
            path.write_text(yaml.safe_dump(spec, sort_keys=False))
            done = subprocess.run([*KW, "submit", str(path), "--wait"], env=env, cwd=ROOT,
                                  capture_output=True, text=True)
            print(done.stdout[-4000:], flush=True)
            first = (done.stdout + done.stderr).split("job ", 1)[-1].split(" ", 1)[0]
            if first.isdigit():
                job_ids.append(int(first))
            print(f"[{time.monotonic() - t0:5.0f} s] {spec['name']}: exit {done.returncode}",
                  flush=True)
    finally:
        up.terminate()
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
    os.environ.update({k: v for k, v in env.items() if k.startswith("KERNELWATCH_")})
    rows = collect(job_ids)
    (args.out / "agreement.json").write_text(json.dumps(
        {"seed": seed, "versions": versions, "specs": sweeps, "points": rows}, indent=1,
        default=str))
    report(rows)


def _wait_for_api(env: dict[str, str], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run([*KW, "jobs"], env=env, cwd=ROOT, capture_output=True).returncode == 0:
            return
        time.sleep(2)
    raise SystemExit("the service did not answer within 300 s (see service.log)")


def collect(job_ids: list[int]) -> list[dict[str, Any]]:
    """Every point of the jobs with its cross-check, read from the service's database."""
    from sqlalchemy import select

    from kernelwatch.core import db
    from kernelwatch.core.models import Crosscheck, Point

    db.reset_engine()
    out = []
    with db.session_scope() as session:
        rows = session.execute(select(Point, Crosscheck).outerjoin(
            Crosscheck, Crosscheck.point_id == Point.id).where(Point.job_id.in_(job_ids))
            .order_by(Point.id))
        for point, check in rows:
            repeats = (point.telemetry or {}).get("repeats") or []
            out.append({
                "job_id": point.job_id, "version": point.flashinfer_version,
                "kernel": point.kernel, "backend": point.backend,
                "resolved_backend": point.resolved_backend, "params": point.params,
                "status": point.status, "error": point.error, "median_us": point.median_us,
                "ci_us": [point.ci_low_us, point.ci_high_us],
                "measure_s": round(sum(r.get("seconds") or 0 for r in repeats), 3),
                "crosscheck": None if check is None else {
                    c: getattr(check, c) for c in (
                        "status", "error", "command", "median_us", "std_us", "method",
                        "resolved_backend", "cold_l2", "cuda_graph_plan", "clock_mhz",
                        "wall_s", "diff_pct", "agrees", "causes", "row")},
            })
    return out


def report(rows: list[dict[str, Any]]) -> None:
    checked = [r for r in rows if (r["crosscheck"] or {}).get("agrees") is not None]
    for version in sorted({r["version"] for r in rows}, key=str):
        mine = [r for r in checked if r["version"] == version]
        agree = sum(r["crosscheck"]["agrees"] for r in mine)
        share = f"{100 * agree / len(mine):.1f}%" if mine else "-"
        print(f"FlashInfer {version}: {agree} of {len(mine)} points within 3% ({share})")
        for kernel in sorted({r["kernel"] for r in mine}):
            sub = [r for r in mine if r["kernel"] == kernel]
            diffs = [r["crosscheck"]["diff_pct"] for r in sub]
            print(f"  {kernel}: {sum(r['crosscheck']['agrees'] for r in sub)}/{len(sub)}, "
                  f"diff median {statistics.median(diffs):+.2f}%, "
                  f"range {min(diffs):+.2f}..{max(diffs):+.2f}%")
    misses = [r for r in checked if not r["crosscheck"]["agrees"]]
    for r in misses:
        causes = "; ".join(f"{c['cause']}: {c['detail']}" for c in r["crosscheck"]["causes"]
                           or []) or "no measured cause"
        print(f"miss {r['version']} {r['kernel']} {r['backend']} {r['params']}: "
              f"{r['crosscheck']['diff_pct']:+.2f}% ({causes})")
    other = [r for r in rows if r["status"] in ("ok", "incorrect")
             and (r["crosscheck"] or {}).get("agrees") is None]
    for r in other:
        c = r["crosscheck"] or {}
        print(f"not compared {r['version']} {r['kernel']} {r['backend']}: "
              f"{c.get('status')} {c.get('error') or ''}")
    walls = [r["crosscheck"]["wall_s"] for r in checked if r["crosscheck"]["wall_s"]]
    ours = [r["measure_s"] for r in checked if r["measure_s"]]
    if walls and ours:
        print(f"cost per point: cross-check {statistics.median(walls):.2f} s (median), "
              f"kernelwatch's own measurement {statistics.median(ours):.2f} s (median, "
              "all repeats)")


if __name__ == "__main__":
    main()
