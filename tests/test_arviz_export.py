"""``Posterior.to_arviz()`` on the installed ArviZ: 0.x (``InferenceData``, Python 3.11 in
the lock) or >= 1 (an xarray ``DataTree`` from ``arviz_base``, Python >= 3.12)."""

from __future__ import annotations

import numpy as np

from twinloop.calibrate.posterior import Posterior


def test_to_arviz_gives_the_groups_and_arviz_summarizes_them() -> None:
    import arviz as az

    rng = np.random.default_rng(0)
    log_samples = rng.normal([1.0, -2.0], 0.1, size=(2, 300, 2))
    diverging = np.zeros((2, 300), dtype=bool)
    diverging[0, :3] = True
    post = Posterior(("y0", "g"), log_samples, "nuts", divergences=3, extra={"diverging": diverging})
    data = post.to_arviz()
    assert set(data.posterior.data_vars) == {"y0", "g", "log_y0", "log_g"}
    assert data.posterior["y0"].shape == (2, 300)
    assert np.allclose(data.posterior["log_g"].values, log_samples[..., 1])
    assert np.allclose(data.posterior["y0"].values, np.exp(log_samples[..., 0]))
    assert int(data.sample_stats["diverging"].values.sum()) == 3
    table = az.summary(data)
    assert {"y0", "g", "log_y0", "log_g"} <= set(table.index)
    assert abs(float(table.loc["log_y0", "mean"]) - 1.0) < 0.05
    ess = az.ess(data)
    assert float(ess["log_g"]) > 100


def test_to_arviz_without_sample_stats() -> None:
    post = Posterior(("d",), np.zeros((1, 10, 1)), "svi")
    data = post.to_arviz()
    assert set(data.posterior.data_vars) == {"d", "log_d"}
    assert not hasattr(data, "sample_stats")
