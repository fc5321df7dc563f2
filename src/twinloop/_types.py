"""Shape-aware type aliases used in signatures across the package."""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
from jaxtyping import Array, Float

State: TypeAlias = Float[Array, " n_states"]
Rates: TypeAlias = Float[Array, " n_rate_inputs"]
ParamVector: TypeAlias = Float[Array, " n_params"]
Params: TypeAlias = Float[np.ndarray, "n_patients n_params"]
Times: TypeAlias = Float[np.ndarray, " n_times"]
