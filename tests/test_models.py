import dataclasses

import jax.numpy as jnp
import pytest

import twinloop as tl
from twinloop.models.base import Input, Parameter, State


def test_registry_lists_and_returns_models():
    assert {"t1d-uva-padova", "pk-one-compartment"} <= set(tl.models.available())
    assert tl.models.get("t1d-uva-padova") is tl.models.get("t1d-uva-padova")
    with pytest.raises(tl.ModelError, match="Unknown model 'nope'; available models: "):
        tl.models.get("nope")


# The default run checks one model of each kind (T1D with its discrete update and steady
# state, PK with boluses, tumour growth with a closed form and with a drug effect); the
# variants of those kinds (two-compartment PK and Claret, Simeoni) run in the slow set.
VARIANTS = {"pk-two-compartment", "tgi-claret-2cmt", "tgi-simeoni"}


@pytest.mark.parametrize(
    "model_id", [pytest.param(m, marks=pytest.mark.slow) if m in VARIANTS else m for m in tl.models.available()]
)
def test_every_registered_model_passes_its_contract(model_id):
    results = tl.models.check_model(tl.models.get(model_id))
    assert [r.name for r in results] == ["units", "jit_and_vmap", "gradients", "nonnegative_states", "steady_state"]
    assert all(r.passed for r in results)


def test_contract_catches_a_false_steady_state_and_negative_states(pk):
    leaky = dataclasses.replace(pk, id="leaky", initial_state=lambda p: jnp.stack([0 * p["V"], 10 + 0 * p["V"]]))
    # each model runs only the check it fails (the whole contract runs in the test above)
    with pytest.raises(tl.ModelError, match="steady_state: AssertionError"):
        tl.models.check_model(leaky, checks=["units", "steady_state"])

    def draining(t, x, u, p):
        return jnp.stack([-p["ka"] * x[0], -50.0 + 0 * x[1]])

    negative = dataclasses.replace(pk, id="negative", rhs=draining, steady_state_inputs=None)
    checked = tl.models.check_model(negative, checks=["nonnegative_states"], raise_on_failure=False)
    results = {r.name: r for r in checked}
    assert not results["nonnegative_states"].passed and "central" in results["nonnegative_states"].detail


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"states": (State("a", "mg"), State("a", "mg"))}, r"declares the state names \['a'\] more than once"),
        ({"states": (State("a", "milli grams"), State("b", "mg"))}, "must be a UCUM unit string"),
        ({"inputs": (Input("dose", "mg", "bolus", target="nowhere"),)}, "targets unknown state 'nowhere'"),
    ],
)
def test_inconsistent_specs_are_refused(pk, change, message):
    with pytest.raises(tl.ModelError, match=message):
        dataclasses.replace(pk, **change)


def test_parameter_default_must_lie_in_bounds():
    with pytest.raises(tl.ModelError, match="default 5 outside its bounds"):
        Parameter("k", "1/h", 5, 0, 1)


def test_content_hash_covers_the_source_and_the_declarations(pk):
    """The hash recorded in manifests and twin registries: the algorithm is pinned, so the
    hashes of artifacts written before stay valid."""
    import hashlib
    import inspect
    import json
    import sys

    source = inspect.getsource(sys.modules[pk.rhs.__module__])
    declared = [[p.name, p.unit, p.default, p.lower, p.upper] for p in pk.parameters]
    declared += [[s.name, s.unit] for s in pk.states] + [pk.id, pk.version]
    assert pk.content_hash() == hashlib.sha256((source + json.dumps(declared)).encode()).hexdigest()
    first = pk.parameters[0]
    moved = dataclasses.replace(first, default=(first.default + first.upper) / 2)
    assert dataclasses.replace(pk, parameters=(moved, *pk.parameters[1:])).content_hash() != pk.content_hash()


def test_parameter_scale_defaults_from_its_bounds_and_log_needs_a_positive_lower_bound():
    assert Parameter("k", "1/h", 0.5, 0.1, 1).scale == "log"
    assert Parameter("shift", "mg", 0.0, -5, 5).scale == "linear"
    assert Parameter("k", "1/h", 0.5, 0.1, 1, scale="linear").scale == "linear"
    with pytest.raises(tl.ModelError, match=r"scale 'log' but lower bound 0.*scale='linear'"):
        Parameter("k", "1/h", 0.5, 0, 1, scale="log")
    with pytest.raises(tl.ModelError, match="expected 'log' or 'linear'"):
        Parameter("k", "1/h", 0.5, 0.1, 1, scale="logit")


def test_states_are_signed_unless_declared_nonnegative():
    assert State("x", "1").nonnegative is False
    for model_id in tl.models.available():  # the built-ins say which of their states cannot be negative
        model = tl.models.get(model_id)
        assert any(s.nonnegative for s in model.states), model_id
    t1d = tl.models.get("t1d-uva-padova")
    assert not t1d.states[t1d.state_names.index("insulin_action")].nonnegative


def test_a_dimensionless_model_declares_its_clock(pk):
    assert dataclasses.replace(pk, time_unit="1", clock_seconds=60.0).clock_seconds == 60.0
    with pytest.raises(tl.ModelError, match="clock_seconds of model 'pk-one-compartment' must be"):
        dataclasses.replace(pk, time_unit="1", clock_seconds=-1.0)
