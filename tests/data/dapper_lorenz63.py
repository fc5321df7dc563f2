"""Run DAPPER's filters on a given Lorenz-63 truth and observations; executed by the DAPPER
environment's python (``envs/dapper``, built by ``make env`` into ``.venv-dapper``), not
imported. DAPPER pins dill/pathos below what the main environment uses and pulls in
Jupyter, so it lives apart; ``tests/data/lorenz63.py`` writes the job and reads the result.
DAPPER's filters run unchanged; the model they propagate is ``lorenz63_model.step``, the
RK4 twinloop's side uses (DAPPER's own is the same scheme, arranged differently).

Usage: ``python dapper_lorenz63.py JOB.npz OUT.npz``. The job holds ``xx`` (K+1, 3), ``yy``
(Ko+1, 3), ``dt``, ``dko``, ``seed`` and ``methods``, a JSON list of
``[label, class name in dapper.da_methods, keyword arguments]``. For each method the
output holds ``{label}/mean`` (Ko+1, 3) and ``{label}/variance`` (Ko+1, 3): the (weighted, for
particle filters) mean and unbiased variance of the ensemble that leaves each update
(DAPPER's "u" statistics at observation times: after the particle filter's resampling
and jitter, like twinloop's updated ensemble), ``{label}/mean.a`` and ``{label}/variance.a``
the same of DAPPER's "a" statistics, those of its ``rmse.a`` and ``spread.a`` (the particle
filter's weighted ensemble before resampling; the same ensemble for the Kalman filters);
``{label}/seconds`` (the assimilation's wall time) and, where DAPPER
records them, ``{label}/resampled`` and ``{label}/infl``. DAPPER's own per-step statistics
(CRPS, rank histograms, ...) are replaced by this lighter recorder, since they cost more
than the filters; the filters themselves run unchanged.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "agg")


def main(job_path: str, out_path: str) -> None:
    import numpy as np

    warnings.filterwarnings("ignore")
    import dapper as dpr
    import dapper.da_methods as da
    import dapper.mods as modelling
    import dapper.stats
    import dapper.tools.progressbar as progressbar
    from dapper.mods.Lorenz63.sakov2012 import HMM as SAKOV2012

    progressbar.disable_progbar = True
    spec = importlib.util.spec_from_file_location("lorenz63_model", Path(__file__).with_name("lorenz63_model.py"))
    model = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(model)

    def moments(E, w):
        if w is None:
            return E.mean(axis=0), E.var(axis=0, ddof=1)
        mean = w @ E  # DAPPER's weighted mean and unbiased variance (stats.assess_ens)
        n_eff = 1.0 / (w @ w)
        unbias = 1.0 if 1.0 - w.max() < 1e-10 else n_eff / (n_eff - 1.0)
        return mean, unbias * (w @ (E - mean) ** 2)

    def assess(self, k, ko=None, faus=None, E=None, w=None, mu=None, Cov=None):
        if ko is None:
            return
        for sub in faus or "au":
            if sub in "au":
                self.recorded[sub][0][ko], self.recorded[sub][1][ko] = moments(E, w)

    dapper.stats.Stats.assess = assess

    with np.load(job_path) as job:
        xx, yy = job["xx"], job["yy"]
        dt, dko, seed = float(job["dt"]), int(job["dko"]), int(job["seed"])
        methods = json.loads(str(job["methods"]))
    ko = yy.shape[0] - 1
    hmm = SAKOV2012.copy()
    hmm.tseq = modelling.Chronology(dt, dko=dko, Ko=ko, BurnIn=0.0)
    hmm.liveplotters = []
    hmm.Dyn.model = model.step  # the integrator twinloop's side uses (the same RK4, bit for bit)
    out = {}
    for label, name, kwargs in methods:
        xp = getattr(da, name)(**kwargs)
        dpr.set_seed(seed)  # numpy's default_rng(seed): twinloop's run draws the same numbers
        start = time.perf_counter()
        original = dapper.stats.Stats.__init__

        def init(self, *args, _original=original, **kws):
            _original(self, *args, **kws)
            self.recorded = {sub: np.full((2, ko + 1, xx.shape[1]), np.nan) for sub in "au"}

        dapper.stats.Stats.__init__ = init
        try:
            xp.assimilate(hmm, xx, yy, liveplots=False)
        finally:
            dapper.stats.Stats.__init__ = original
        out[f"{label}/seconds"] = np.array(time.perf_counter() - start)
        out[f"{label}/mean"], out[f"{label}/variance"] = xp.stats.recorded["u"]
        out[f"{label}/mean.a"], out[f"{label}/variance.a"] = xp.stats.recorded["a"]
        for series in ("resmpl", "infl"):
            if hasattr(xp.stats, series):
                values = np.asarray(getattr(xp.stats, series), dtype=float).ravel()
                if np.isfinite(values).any():
                    out[f"{label}/{'resampled' if series == 'resmpl' else series}"] = values
    out["dapper_version"] = np.array(dpr.__version__)
    np.savez(out_path, **out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
