"""twinloop's assimilators against DAPPER's on Lorenz-63 (Sakov et al. 2012 settings).

RK4 with dt = 0.01, all three components observed every 0.25 time units with R = 2 I,
scores after a burn-in of 16 time units. For each seed, one truth and its observations
are drawn; twinloop's filters run on them here while DAPPER's run on the very same truth
and observations, with the same random seed, in DAPPER's own environment
(``.venv-dapper``, built by ``make env``). Pairs:

- ``enkf``: ``StochasticEnKF(inflation=1.04)`` vs ``EnKF("PertObs", N=10, infl=1.04)``;
- ``etkf``: ``ETKF(inflation=1.02, rotate=True)`` vs ``EnKF("Sqrt", N=10, infl=1.02, rot=True)``;
- ``enkf_n``: ``ETKF(inflation="adaptive", rotate=True)`` vs ``EnKF_N(N=10, rot=True)``;
- ``enkf_adaptive``: ``StochasticEnKF(inflation="adaptive")`` (EnKF-N's estimate as prior
  inflation, no DAPPER counterpart) against DAPPER's ``EnKF_N(N=10, rot=True)``;
- ``pf``: ``ParticleFilter(resample_below=0.3, reg=2.4)`` vs ``PartFilt(N=100, reg=2.4, NER=0.3)``.

rmse.a and spread.a are DAPPER's definitions (time averages of the analysis RMSE and of
the root mean ensemble variance), computed alike from both sides' analysis ensembles:
those leaving each update (for the particle filters, after resampling and jitter);
``*_lost_fraction`` is the share of cycles whose analysis RMSE exceeds 3 (the filter has
lost the truth), ``*_rmse_a_both_tracking`` rmse.a over the cycles where neither has;
``dapper_rmse_a_official`` is DAPPER's own rmse.a, which for its particle filter scores the
weighted ensemble before resampling. ms per cycle is wall time per assimilation cycle
(25 RK4 steps and the update; twinloop's ``update`` alone in ``twinloop_update_ms``).

    .venv/bin/python benchmarks/bench_l63.py [--cycles 3000] [--seeds 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
HARNESS = Path(__file__).parents[1] / "tests" / "data" / "lorenz63.py"


def _harness():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("lorenz63_harness", HARNESS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["lorenz63_harness"] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=3000, help="assimilation cycles after the burn-in")
    parser.add_argument("--seeds", type=int, default=3, help="independent truths")
    args = parser.parse_args()

    from twinloop.twin.assimilation import ETKF, ParticleFilter, StochasticEnKF

    l63 = _harness()
    pairs = {
        "enkf": (lambda: StochasticEnKF(inflation=1.04), 10, "enkf"),
        "etkf": (lambda: ETKF(inflation=1.02, rotate=True), 10, "etkf"),
        "enkf_n": (lambda: ETKF(inflation="adaptive", rotate=True), 10, "enkf_n"),
        "enkf_adaptive": (lambda: StochasticEnKF(inflation="adaptive"), 10, "enkf_n"),
        "pf": (lambda: ParticleFilter(resample_below=0.3, reg=2.4), 100, "pf"),
    }
    burn = round(l63.BURN_IN / (l63.DT * l63.DKO))
    rows: dict[str, dict[str, list[float]]] = {k: {} for k in pairs}
    version = ""
    for seed in range(args.seeds):
        truth = l63.simulate(args.cycles + burn, seed)
        job = l63.DapperJob(truth, sorted({ref for _, _, ref in pairs.values()}), seed + 1)
        ours = {k: l63.run_twinloop(make(), truth, n, seed + 1) for k, (make, n, _) in pairs.items()}
        theirs, version = job.result()
        for k, (_, _, ref) in pairs.items():
            a, b, b_official = ours[k], theirs[ref], theirs[f"{ref}.a"]
            figures = {
                "twinloop_rmse_a": a.rmse(truth),
                "dapper_rmse_a": b.rmse(truth),
                "dapper_rmse_a_official": b_official.rmse(truth),
                "twinloop_spread_a": a.spread(truth),
                "dapper_spread_a": b.spread(truth),
                "twinloop_ms_per_cycle": a.ms_per_cycle(),
                "twinloop_update_ms": 1e3 * a.update_seconds / truth.cycles,
                "dapper_ms_per_cycle": b.ms_per_cycle(),
                "twinloop_lost_fraction": float(np.mean(a.lost(truth))),
                "dapper_lost_fraction": float(np.mean(b.lost(truth))),
                "twinloop_rmse_a_both_tracking": a.rmse(truth, ~a.lost(truth) & ~b.lost(truth)),
                "dapper_rmse_a_both_tracking": b.rmse(truth, ~a.lost(truth) & ~b.lost(truth)),
                "twinloop_resampled_fraction": float(np.mean(a.resampled)),
                "dapper_resampled_fraction": float(np.mean(b.resampled)) if b.resampled.size else 0.0,
            }
            for name, value in figures.items():
                rows[k].setdefault(name, []).append(value)
        print(
            f"seed {seed} (rmse.a twinloop/DAPPER): "
            + ", ".join(f"{k} {rows[k]['twinloop_rmse_a'][-1]:.3f}/{rows[k]['dapper_rmse_a'][-1]:.3f}" for k in pairs)
        )

    summary = {}
    print(f"\nLorenz-63 (Sakov 2012), {args.cycles} cycles after burn-in x {args.seeds} truths; DAPPER {version}")
    heads = ("rmse.a tl", "dapper", "ratio", "spread tl", "dapper", "ms/cycle tl", "update", "dapper")
    widths = (10, 8, 6, 10, 7, 12, 7, 7)
    print(f"{'method':15s} " + " ".join(f"{h:>{w}s}" for h, w in zip(heads, widths, strict=True)))
    for k, figures in rows.items():
        mean = {name: float(np.mean(v)) for name, v in figures.items()}
        ratios = np.array(figures["twinloop_rmse_a"]) / np.array(figures["dapper_rmse_a"])
        mean["rmse_ratio"] = float(ratios.mean())
        mean["rmse_ratio_sd_across_seeds"] = float(ratios.std(ddof=1)) if ratios.size > 1 else float("nan")
        summary[k] = {"mean": mean, "per_seed": figures}
        print(
            f"{k:15s} {mean['twinloop_rmse_a']:10.3f} {mean['dapper_rmse_a']:8.3f} {mean['rmse_ratio']:6.3f} "
            f"{mean['twinloop_spread_a']:10.3f} {mean['dapper_spread_a']:7.3f} {mean['twinloop_ms_per_cycle']:12.2f} "
            f"{mean['twinloop_update_ms']:7.3f} {mean['dapper_ms_per_cycle']:7.2f}"
        )
    RESULTS.mkdir(exist_ok=True)
    out = {
        "benchmark": "bench_l63",
        "settings": {
            "model": "Lorenz-63, RK4 dt=0.01",
            "observations": "all 3 components every 25 steps (0.25 time units), R = 2 I",
            "burn_in_time": l63.BURN_IN,
            "cycles_after_burn_in": args.cycles,
            "seeds": args.seeds,
            "dapper_reference": {k: l63.DAPPER_METHODS[ref] for k, (_, _, ref) in pairs.items()},
        },
        "dapper_version": version,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "results": summary,
    }
    (RESULTS / "bench_l63.json").write_text(json.dumps(out, indent=2))
    print(f"wrote {RESULTS / 'bench_l63.json'}")


if __name__ == "__main__":
    main()
