"""A calibrated posterior: draws of the fitted log-parameters (and of the model-error
scales, when they were estimated), their diagnostics, exports."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin

from twinloop.calibrate.model_error import summarize
from twinloop.errors import CalibrationError

RHAT_MAX = 1.05
ESS_MIN = 100.0
DIVERGENCE_MAX = 0.01


class CalibrationWarning(UserWarning):
    """A calibration's diagnostics are outside their accepted range."""


@dataclass
class Posterior:
    """Posterior draws of the fitted parameters' unconstrained values ``(chains, draws, k)``
    (their logarithms, or their values for linear-scale parameters: see
    :class:`~twinloop.calibrate.ParameterMap`), and of the model-error scale ``s >= 1`` of
    each of ``error_names`` (``(chains, draws, m)``; ``None`` when the declared noise was
    taken as exact). ``transform`` maps draws to the parameters' own values (the
    parameter map's ``values``; ``exp`` when not given)."""

    names: tuple[str, ...]
    log_samples: np.ndarray
    method: str
    divergences: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    error_names: tuple[str, ...] = ()
    error_samples: np.ndarray | None = None
    transform: Callable[[np.ndarray], np.ndarray] | None = None

    def error_scale(self) -> dict[str, float]:
        """Per observable, ``sqrt(E[s^2])``: the widening of its noise a twin adopts (empty
        without model error)."""
        if self.error_samples is None:
            return {}
        return {k: v["scale"] for k, v in summarize(self.error_samples, self.error_names).items()}

    @property
    def n_draws(self) -> int:
        return int(self.log_samples.shape[0] * self.log_samples.shape[1])

    def draws(self) -> np.ndarray:
        """All draws, ``(chains * draws, k)``, on the unconstrained (fitted) scale."""
        return self.log_samples.reshape(-1, self.log_samples.shape[-1])

    def values(self) -> np.ndarray:
        """All draws on the parameters' own scale."""
        draws = self.draws()
        return np.exp(draws) if self.transform is None else np.asarray(self.transform(draws))

    def interval(self, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """Equal-tailed credible interval of every parameter, on its own scale."""
        tail = (1.0 - level) / 2.0
        lo, hi = np.quantile(self.values(), [tail, 1.0 - tail], axis=0)
        return lo, hi

    def diagnostics(self) -> dict[str, Any]:
        """R-hat and bulk effective sample size per parameter (NUTS with >= 2 chains),
        the number of divergent transitions and the draw count."""
        out: dict[str, Any] = {"method": self.method, "draws": self.n_draws, "divergences": int(self.divergences)}
        chains = self.log_samples.shape[0]
        if self.method == "nuts":
            samples, names = self.log_samples, list(self.names)
            if self.error_samples is not None:
                samples = np.concatenate([samples, self.error_samples], axis=-1)
                names += [f"model_error[{n}]" for n in self.error_names]
            ess = effective_sample_size(samples)
            out["ess"] = {n: float(v) for n, v in zip(names, np.atleast_1d(ess), strict=True)}
            if chains >= 2:
                rhat = split_gelman_rubin(samples)
                out["rhat"] = {n: float(v) for n, v in zip(names, np.atleast_1d(rhat), strict=True)}
        if self.error_samples is not None:
            out["error_scale"] = self.error_scale()
            out["model_error"] = summarize(self.error_samples, self.error_names)
        out.update({k: v for k, v in self.extra.items() if isinstance(v, int | float | str)})
        return out

    def problems(self) -> list[str]:
        """What is wrong with this posterior, in words (empty when the diagnostics pass)."""
        d = self.diagnostics()
        found = []
        for name, r in d.get("rhat", {}).items():
            if not np.isfinite(r) or r > RHAT_MAX:
                found.append(f"R-hat of {name} is {r:.3f} (> {RHAT_MAX}): chains disagree")
        for name, e in d.get("ess", {}).items():
            if not np.isfinite(e) or e < ESS_MIN:
                found.append(f"effective sample size of {name} is {e:.0f} (< {ESS_MIN:.0f})")
        if self.method == "nuts" and self.divergences > DIVERGENCE_MAX * self.n_draws:
            found.append(f"{self.divergences} divergent transitions of {self.n_draws} draws")
        if self.method == "svi" and not np.isfinite(self.extra.get("final_loss", 0.0)):
            found.append("the SVI loss is not finite")
        return found

    def check(self, strict: bool = False) -> None:
        """Warn (or, if ``strict``, raise) when the diagnostics fail."""
        found = self.problems()
        if not found:
            return
        message = (
            "Calibration diagnostics failed: "
            + "; ".join(found)
            + (". Run more warm-up and samples (num_warmup, num_samples) or more chains, or simplify the fitted set.")
        )
        if strict:
            raise CalibrationError(message)
        warnings.warn(message, CalibrationWarning, stacklevel=3)

    def summary(self) -> pd.DataFrame:
        values = self.values()
        lo, hi = self.interval(0.9)
        d = self.diagnostics()
        return pd.DataFrame(
            {
                "parameter": self.names,
                "mean": values.mean(axis=0),
                "sd": values.std(axis=0),
                "q05": lo,
                "median": np.median(values, axis=0),
                "q95": hi,
                "rhat": [d.get("rhat", {}).get(n, np.nan) for n in self.names],
                "ess": [d.get("ess", {}).get(n, np.nan) for n in self.names],
            }
        )

    def to_arviz(self) -> Any:
        """The draws for ArviZ (parameters on their own scale, and ``log_<name>``; divergences
        in ``sample_stats``): an ``InferenceData`` with ArviZ 0.x, an xarray ``DataTree`` with
        ArviZ >= 1 (``arviz_base.from_dict``). Both have ``.posterior`` and ``.sample_stats`` groups,
        and ``arviz.summary``, ``ess`` and ``rhat`` of either version accept them."""
        own = self.values().reshape(self.log_samples.shape)
        posterior = {name: own[..., i] for i, name in enumerate(self.names)}
        posterior.update({f"log_{name}": self.log_samples[..., i] for i, name in enumerate(self.names)})
        groups: dict[str, Any] = {"posterior": posterior}
        if "diverging" in self.extra:
            groups["sample_stats"] = {"diverging": np.asarray(self.extra["diverging"])}
        import arviz as az

        if int(str(az.__version__).split(".")[0]) >= 1:
            return az.from_dict(groups)  # arviz_base.from_dict: a mapping of groups -> DataTree
        return az.from_dict(**groups)  # 0.x: one keyword argument per group -> InferenceData
