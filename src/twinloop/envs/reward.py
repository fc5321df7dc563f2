"""The reward of the glucose environments: minus Kovatchev's risk index.

Kovatchev et al. (Diabetes Care 1997; 2001) symmetrize the glucose scale with
``f(BG) = 1.509 (ln(BG)^1.084 - 5.381)`` (BG in mg/dL) and score ``risk = 10 f^2``:
0 at 112.5 mg/dL, about 100 at 20 and at 600 mg/dL, the same penalty for a low and a
high of equal clinical weight. simglucose's environment offers the same reward
(``risk_diff`` and ``magni`` variants aside); the LBGI and HBGI average its two halves.
"""

from __future__ import annotations

from typing import Any


def risk_index(bg_mg_dl: Any) -> Any:
    """Kovatchev's risk ``10 f(BG)^2`` of glucose values (mg/dL, > 0), elementwise.

    Example:
        >>> float(risk_index(112.5)) < 1e-3
        True
    """
    import jax.numpy as jnp

    f = 1.509 * (jnp.log(bg_mg_dl) ** 1.084 - 5.381)
    return 10.0 * f**2
