"""The engine on a GPU: the same code, the same results as on the CPU (run by hand where one is).

On a machine with an NVIDIA GPU: ``pip install -U "jax[cuda12]"`` in the project's
environment, then ``pytest -m gpu tests/test_gpu.py -s`` (prints patient-days/s).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

import twinloop as tl
from twinloop.govern.validation import replay
from twinloop.models import t1d_uva_padova as t1d_module

pytestmark = pytest.mark.gpu
REFERENCE = "tests/data/simglucose_reference.csv.gz"


def _gpu():
    import jax

    try:
        return jax.devices("gpu")[0]
    except RuntimeError:
        pytest.skip("no GPU visible to JAX")


@pytest.mark.parametrize("path", ["accurate", "fast"])
def test_gpu_matches_the_cpu_and_simglucose(t1d, path):
    import jax

    gpu = _gpu()
    table = pd.read_csv(REFERENCE)
    cases = t1d_module.simglucose_cases(table)
    settings = tl.SolverSettings(path=path)
    with jax.default_device(jax.devices("cpu")[0]):
        cpu = replay(t1d, cases, settings)
    with jax.default_device(gpu):
        on_gpu = replay(t1d, cases, settings)
    assert on_gpu.settings["path"] == path
    gap = np.max(np.abs(on_gpu.observables - cpu.observables), axis=(0, 1))
    assert gap[0] < 1e-6 and gap[1] < 1e-6, gap  # float64 on both: rounding only
    ref = table.pivot(index="patient", columns="minute", values="plasma_glucose_mg_dl").loc[on_gpu.patient_ids]
    assert np.max(np.abs(on_gpu["plasma_glucose"] - ref.to_numpy())) < 0.5


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_gpu_throughput_of_the_fast_path(t1d, precision):
    import jax

    gpu = _gpu()
    n = 100_000
    rng = np.random.default_rng(0)
    names = list(t1d.presets)
    params = np.stack([t1d.preset(names[k]) for k in rng.integers(0, len(names), n)])
    plan = t1d_module.basal_bolus(t1d.param_map(params[0]), t1d_module.STANDARD_MEALS)
    settings = tl.SolverSettings(path="fast", precision=precision)
    times = np.arange(0.0, 1441.0)
    with jax.default_device(gpu):
        tl.simulate(t1d, params[:50_000], plan, times=times, settings=settings, chunk_size=50_000, progress=False)
        start = time.perf_counter()
        traj = tl.simulate(t1d, params, plan, times=times, settings=settings, chunk_size=50_000, progress=False)
        elapsed = time.perf_counter() - start
    assert traj.check["passed"] and not traj.failures
    print(f"\nGPU {gpu.device_kind}, fast path {precision}: {n / elapsed:,.0f} patient-days/s "
          f"({n} patients x 1 day, 1-min output, {elapsed:.1f} s); self-check {traj.check['max_error']}")  # fmt: skip
