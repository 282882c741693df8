"""Detection and false-positive rates of the regression verdict on synthetic samples with a
known truth.

Each trial draws n baseline and n contender latencies around 100 us with lognormal noise of a
given coefficient of variation, plus a right tail (a fraction of samples inflated 5-30%, as
preemption or a clock dip does on a real GPU); the contender's true latency is
``1 + slowdown`` times the baseline's. The verdict rule is exactly ``kernelwatch.core.compare`` 's
(``verdicts_batch`` is the vectorised form of ``compare_samples``).

    detection rate       share of trials with a planted slowdown > 0 flagged ``regression``
    false-positive rate  share of trials with no slowdown flagged ``regression`` (or
                         ``improvement``, reported apart)
    after confirmation   the same shares once each flagged trial is re-measured as
                         ``worker/confirm.py`` does (ROUNDS rounds of the harness's repeats,
                         n fresh samples per round and side, judged block by block with
                         ``kernelwatch.core.compare.compare_paired``): what would be alarmed as
                         ``confirmed``

Run:  .venv/bin/python bench/regression_detection.py [--trials 2000] [--n 30]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from kernelwatch.core.compare import (
    DEFAULT_THRESHOLD,
    IMPROVEMENT,
    REGRESSION,
    RESAMPLES,
    compare_paired,
    verdicts_batch,
)
from kernelwatch.core.spec import Timing
from kernelwatch.worker.confirm import ROUNDS

REPEATS = int(Timing.model_fields["repeats"].default)  # a round's samples, in repeats

CVS = (0.005, 0.01, 0.02, 0.05)
SLOWDOWNS = (0.0, 0.02, 0.03, 0.05, 0.10)


def draw(
    rng: np.random.Generator, trials: int, n: int, cv: float, scale: float, tail: float
) -> np.ndarray:
    sigma = math.sqrt(math.log1p(cv * cv))
    x = scale * rng.lognormal(-sigma * sigma / 2, sigma, size=(trials, n))
    spikes = rng.random((trials, n)) < tail
    x[spikes] *= 1.0 + rng.uniform(0.05, 0.30, size=int(spikes.sum()))
    return x


def rates(
    cv: float, slowdown: float, trials: int, n: int, threshold: float, tail: float, seed: int,
    resamples: int, chunk: int = 100,
) -> tuple[float, float, float]:
    """(flagged regression, flagged improvement, flagged and confirmed) shares."""
    rng = np.random.default_rng(seed)
    reg = imp = confirmed = 0
    for start in range(0, trials, chunk):
        k = min(chunk, trials - start)
        b = draw(rng, k, n, cv, 100.0, tail)
        c = draw(rng, k, n, cv, 100.0 * (1.0 + slowdown), tail)
        _, _, _, verdict = verdicts_batch(
            b, c, threshold, resamples=resamples, seed=seed + start
        )
        flagged = int(np.sum(verdict == REGRESSION))
        reg += flagged
        imp += int(np.sum(verdict == IMPROVEMENT))
        for t in range(flagged):
            # The interleaved re-measurement: ROUNDS rounds, each n fresh samples per side in
            # REPEATS repeats; a block is one round's repeat of both sides.
            per = max(2, n // REPEATS)
            b2 = draw(rng, ROUNDS * REPEATS, per, cv, 100.0, tail)
            c2 = draw(rng, ROUNDS * REPEATS, per, cv, 100.0 * (1.0 + slowdown), tail)
            est = compare_paired(list(zip(b2, c2, strict=True)), threshold,
                                 resamples=resamples, seed=seed + start + t)
            confirmed += int(est.verdict == REGRESSION)
    return reg / trials, imp / trials, confirmed / trials


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--n", type=int, default=30, help="samples per side")
    ap.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    ap.add_argument("--tail", type=float, default=0.02, help="share of outlier samples")
    ap.add_argument("--resamples", type=int, default=RESAMPLES)
    args = ap.parse_args()
    t0 = time.perf_counter()
    print(
        f"n={args.n} per side, {args.trials} trials per cell, threshold {args.threshold:.0%}, "
        f"tail {args.tail:.0%}, {args.resamples} bootstrap resamples, 95% CI"
    )
    print("each cell: flagged by the comparison / alarmed after confirmation; at 0% slowdown "
          "that is the false-positive rate, elsewhere the detection rate")
    header = "CV      " + "".join(f"{'slow ' + format(s, '.0%'):>18}" for s in SLOWDOWNS)
    print(header)
    print("-" * len(header))
    for cv in CVS:
        cells = []
        fp_imp = 0.0
        for j, s in enumerate(SLOWDOWNS):
            reg, imp, conf = rates(cv, s, args.trials, args.n, args.threshold, args.tail,
                                   seed=1000 * j + int(cv * 1e4), resamples=args.resamples)
            cells.append(f"{reg:7.2%} / {conf:7.2%}")
            if s == 0:
                fp_imp = imp
        print(f"{cv:<8.1%}" + "".join(f"{c:>18}" for c in cells)
              + f"   (false 'improvement' at 0%: {fp_imp:.2%})")
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
