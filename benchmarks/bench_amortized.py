"""Amortized calibration against NUTS on tgi-stein (a CT scan every 7 weeks for a year).

Trains the NPE (flowjax) on simulated patients, then for held-out patients measures
the time of 1,000 posterior draws, the C2ST against a NUTS posterior (2 chains, 500 +
500) of the same patient and NUTS's own time, the SBC KS p-values, and how much
seeding NUTS from amortized draws shortens it (60 warm-up steps instead of 500, with
the gap between the two posteriors' medians in posterior sd). Prints the figures and
writes JSON.

    .venv/bin/python benchmarks/bench_amortized.py [--simulations 20000] [--epochs 150] [--patients 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--simulations", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--patients", type=int, default=5)
    parser.add_argument("--flows", type=int, default=1)
    args = parser.parse_args()

    import jax

    import twinloop as tl
    from twinloop.calibrate import (
        AmortizedPosterior,
        CalibrationProblem,
        Calibrator,
        GaussianPrior,
        NoiseModel,
        NPESettings,
        ObservationDesign,
        ParameterMap,
        c2st,
        sbc,
    )
    from twinloop.cohort import Population

    model = tl.models.get("tgi-stein")
    names = ("y0", "g", "d")
    prior = GaussianPrior.from_population(Population.default(model), names, n=4000, seed=1)
    pmap = ParameterMap(model, names, model.default_parameters)
    noise = NoiseModel(additive=1.0, proportional=0.1)
    times = np.arange(42.0, 400.0, 49.0)
    design = ObservationDesign("sum_of_diameters", tuple(times), jitter=7.0, missing=0.15, noise=noise)
    settings = NPESettings(n_simulations=args.simulations, max_epochs=args.epochs, n_flows=args.flows)
    t0 = time.perf_counter()
    npe = AmortizedPosterior(model, pmap, prior, design, settings).fit()
    train_s = time.perf_counter() - t0
    calibration = sbc(npe, 300, 100, seed=5)

    rng = np.random.default_rng(11)
    truth = prior.sample(args.patients, rng)
    traj = tl.simulate(model, pmap.full_batch(truth), tl.Inputs(), times=np.r_[0.0, times], progress=False)
    scans = noise.sample(traj["sum_of_diameters"][:, 1:], rng)
    cal = Calibrator(prior, num_warmup=500, num_samples=500, num_chains=2, seed=3)
    seeded_cal = Calibrator(prior, num_warmup=60, num_samples=500, num_chains=2, seed=3)
    rows = []
    for i in range(args.patients):
        problem = CalibrationProblem(model, pmap, times, ("sum_of_diameters",) * times.size, scans[i],
                                     noise={"sum_of_diameters": noise})  # fmt: skip
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = cal.fit(problem).posterior.draws()
        nuts_s = time.perf_counter() - t0
        npe.posterior(times, scans[i], n=1000, seed=100 + i)  # compiled for this size
        t0 = time.perf_counter()
        draws = npe.posterior(times, scans[i], n=1000, seed=i).draws()
        jax.block_until_ready(draws)
        npe_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = npe.posterior(times, scans[i], n=2, seed=50 + i).draws()
            seeded = seeded_cal.fit(problem, init=start).posterior
        seeded_s = time.perf_counter() - t0
        gap = np.abs(np.median(seeded.draws(), 0) - np.median(reference, 0)) / reference.std(0)
        rows.append({"nuts_s": nuts_s, "npe_1000_draws_s": npe_s, "c2st": c2st(draws, reference, seed=i),
                     "seeded_nuts_s": seeded_s, "seeded_max_median_gap_sd": float(gap.max()),
                     "seeded_max_rhat": float(max(seeded.diagnostics()["rhat"].values()))})  # fmt: skip
        print(f"patient {i}: NUTS {nuts_s:.2f} s (first includes compile), NPE {1e3 * npe_s:.1f} ms, "
              f"C2ST {rows[-1]['c2st']:.3f}, seeded NUTS {seeded_s:.2f} s (median gap {gap.max():.2f} sd)")  # fmt: skip
    result = {
        "benchmark": "amortized",
        "machine": platform.platform(),
        "device": str(jax.devices()[0]),
        "settings": vars(args),
        "train_s": train_s,
        "epochs": npe.manifest_["epochs"],
        "sbc_ks_pvalues": calibration.ks_pvalues,
        "patients": rows,
        "median_npe_ms": 1e3 * float(np.median([r["npe_1000_draws_s"] for r in rows])),
        "median_nuts_s_after_compile": float(np.median([r["nuts_s"] for r in rows[1:]] or [np.nan])),
        "mean_c2st": float(np.mean([r["c2st"] for r in rows])),
        "median_seeded_nuts_s_after_compile": float(np.median([r["seeded_nuts_s"] for r in rows[1:]] or [np.nan])),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "patients"}, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_amortized_cpu.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
