import numpy as np
import pytest

from twinloop.errors import InputError
from twinloop.models.t1d_cgm import CGMSensor


def test_noise_free_reading_is_the_clipped_glucose_at_sample_times():
    times = np.arange(0.0, 61.0)
    glucose = np.vstack([100 + times, 30 + 0 * times])
    t, readings = CGMSensor("GuardianRT").measure(times, glucose)
    np.testing.assert_array_equal(t, np.arange(0.0, 61.0, 5.0))
    np.testing.assert_allclose(readings[0], 100 + t)
    np.testing.assert_array_equal(readings[1], 39.0)  # the sensor's lower limit


def test_noise_is_seeded_and_independent_per_patient():
    sensor = CGMSensor("Dexcom", noise=True)
    times = np.arange(0.0, 1441.0)
    glucose = np.full((2, times.size), 150.0)
    _, a = sensor.measure(times, glucose, seed=3)
    _, b = sensor.measure(times, glucose, seed=3)
    _, c = sensor.measure(times, glucose, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert not np.allclose(a[0], a[1])


def test_noise_moments_match_the_johnson_su_closed_form():
    # For e ~ N(0, s2): E[sinh((e - g)/d)] = sinh(-g/d) exp(s2 / (2 d^2)), and
    # E[sinh^2] = (cosh(-2g/d) exp(2 s2/d^2) - 1) / 2, with s2 = PACF^2 / (1 - PACF^2).
    sensor = CGMSensor("GuardianRT", noise=True)
    s = sensor.spec
    grid = np.arange(0.0, 15.0 * 400, 15.0)  # sample exactly on the 15-min noise grid
    eps = sensor.errors(400, grid, seed=0)
    s2 = s.pacf**2 / (1 - s.pacf**2)
    mean = s.xi + s.lam * np.sinh(-s.gamma / s.delta) * np.exp(s2 / (2 * s.delta**2))
    second = (np.cosh(-2 * s.gamma / s.delta) * np.exp(2 * s2 / s.delta**2) - 1) / 2
    sd = s.lam * np.sqrt(second - (np.sinh(-s.gamma / s.delta) * np.exp(s2 / (2 * s.delta**2))) ** 2)
    assert eps.mean() == pytest.approx(mean, abs=0.05 * sd)
    assert eps.std() == pytest.approx(sd, rel=0.05)


def test_unknown_sensor_and_missing_seed_are_refused():
    with pytest.raises(InputError, match="Unknown CGM sensor 'Libre'"):
        CGMSensor("Libre")
    with pytest.raises(InputError, match="explicit seed"):
        CGMSensor(noise=True).measure(np.arange(10.0), np.ones((1, 10)))
