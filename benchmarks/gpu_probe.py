"""Throughput of the batched backend on whatever JAX device is present (GPU check).

PYTHONPATH=src python3 benchmarks/gpu_probe.py
"""

from __future__ import annotations

import time
from collections import deque

import jax
import numpy as np

import twinloop as tl
from twinloop.models import t1d_uva_padova as t1d
from twinloop.simulate import simulate_chunks

model = tl.models.get("t1d-uva-padova")
rng = np.random.default_rng(0)
names = list(model.presets)
print("devices:", jax.devices(), flush=True)
for n, chunk in ((10_000, 10_000), (100_000, 50_000)):
    pick = rng.integers(0, 30, n)
    params = np.stack([model.preset(names[k]) for k in pick])
    plan = t1d.basal_bolus(model.param_map(params[0]), t1d.STANDARD_MEALS)
    times = np.arange(0.0, 1441.0)
    deque(simulate_chunks(model, params[:chunk], plan, times=times, chunk_size=chunk), maxlen=0)  # compile
    start = time.perf_counter()
    deque(simulate_chunks(model, params, plan, times=times, chunk_size=chunk), maxlen=0)  # run every chunk
    elapsed = time.perf_counter() - start
    print(f"N={n}: {n / elapsed:,.0f} patient-days/s (chunk {chunk}, shared inputs, float64)", flush=True)
