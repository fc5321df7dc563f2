"""Lorenz-63 and the settings of Sakov et al. (2012, Table 1), DAPPER's reference case
(``dapper/mods/Lorenz63/sakov2012.py``), in plain numpy.

Imported (by path) by both ``lorenz63.py``, which runs twinloop's filters, and
``dapper_lorenz63.py``, which hands this very integrator to DAPPER: both sides then
propagate their ensembles bit for bit alike, and differ only in their assimilation.
"""

from __future__ import annotations

import numpy as np

SIGMA, RHO, BETA = 10.0, 28.0, 8.0 / 3.0
X0 = np.array([1.509, -1.531, 25.46])  # DAPPER's x0 for Lorenz-63
DT = 0.01  # RK4 step
DKO = 25  # steps between observations (0.25 time units)
R_VAR = 2.0  # observation-noise variance of each component
B0_VAR = 2.0  # variance of the initial truth and ensemble around X0
BURN_IN = 16.0  # time units left out of the scores (DAPPER's BurnIn = 4 * Tplot)


def _tendency(x: np.ndarray) -> np.ndarray:
    a, b, c = x  # components along the first axis: (3, N) arrays keep each operation contiguous
    return np.array([SIGMA * (b - a), RHO * a - b - a * c, a * b - BETA * c])


def propagate(x: np.ndarray, steps: int, dt: float = DT) -> np.ndarray:
    """``steps`` classical RK4 steps of every row of ``x`` ``(N, 3)`` (or of one state ``(3,)``)."""
    z = np.asarray(x, dtype=np.float64).T
    for _ in range(steps):
        k1 = _tendency(z)
        k2 = _tendency(z + 0.5 * dt * k1)
        k3 = _tendency(z + 0.5 * dt * k2)
        k4 = _tendency(z + dt * k3)
        z = z + dt / 6.0 * (k1 + 2.0 * (k2 + k3) + k4)
    return z.T.copy()


def step(x: np.ndarray, t: float, dt: float) -> np.ndarray:
    """One RK4 step with DAPPER's model signature ``step(E, t, dt)``."""
    return propagate(x, 1, dt)
