"""Compartmental pharmacokinetics as a reusable component of disease models.

One or two compartments with first-order absorption from an oral depot and linear
elimination; doses enter as IV boluses (into ``central``), oral boluses (into
``depot``, absorbed at ``ka`` with bioavailability ``F``) or zero-order infusions
(mg per time unit into ``central``). A disease model embeds a :class:`PKComponent`:
its states come first, and ``concentration(x, p)`` / ``elimination_rate(x, p)`` give
the exposure that drives the drug effect. The analytic solutions (Gabrielsson &
Weiner) are what the tests compare against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import jax.numpy as jnp

from twinloop.errors import ModelError
from twinloop.models.base import Input, Parameter, ParamMap, State
from twinloop.models.noise import NoiseModel
from twinloop.models.profile import ContextOfUse

Compartments = Literal[1, 2]
DEPOT, CENTRAL, PERIPHERAL = 0, 1, 2

REFERENCE = (
    "Gabrielsson J, Weiner D. Pharmacokinetic and Pharmacodynamic Data Analysis: "
    "Concepts and Applications. 5th ed. Swedish Pharmaceutical Press; 2016."
)

ASSAY = NoiseModel(additive=0.01, proportional=0.1)
"""Measurement noise of a drug concentration (mg/L): an assay's CV and quantification floor."""
CONTEXT = ContextOfUse(
    question="What drug exposure follows this dosing regimen?",
    use="Research and dose-regimen exploration; a pharmacist or physician decides. Not a device.",
    model_influence="medium",
    decision_consequence="medium",
)


@dataclass(frozen=True)
class PKDefaults:
    """Typical values of one drug's PK in the host model's time unit."""

    CL: float
    V: float
    ka: float = 1.0
    F: float = 1.0
    Q: float = 1.0
    V2: float = 10.0


@dataclass(frozen=True)
class PKComponent:
    """Drug PK states, parameters, dose inputs and equations for a host model.

    Arguments:
        compartments: 1 or 2 (central + peripheral).
        time_unit: the host model's UCUM time unit (``"h"``, ``"d"``).
        defaults: typical parameter values in that time unit.
        prefix: prepended to state, parameter and input names (``""`` by default).
    """

    compartments: Compartments
    time_unit: str
    defaults: PKDefaults
    prefix: str = ""

    def __post_init__(self) -> None:
        if self.compartments not in (1, 2):
            raise ModelError(f"PK compartments must be 1 or 2; got {self.compartments!r}.")

    @property
    def n_states(self) -> int:
        return 1 + self.compartments

    def states(self) -> tuple[State, ...]:
        out = [
            State(f"{self.prefix}depot", "mg", "drug amount at the oral absorption site", nonnegative=True),
            State(f"{self.prefix}central", "mg", "drug amount in the central compartment", nonnegative=True),
        ]
        if self.compartments == 2:
            out.append(
                State(f"{self.prefix}peripheral", "mg", "drug amount in the peripheral compartment", nonnegative=True)
            )
        return tuple(out)

    def parameters(self) -> tuple[Parameter, ...]:
        d, t, n = self.defaults, self.time_unit, self.prefix
        out = [
            Parameter(f"{n}CL", f"L/{t}", d.CL, d.CL / 100, d.CL * 100, "clearance"),
            Parameter(f"{n}V", "L", d.V, d.V / 100, d.V * 100, "central volume of distribution"),
            Parameter(f"{n}ka", f"1/{t}", d.ka, d.ka / 100, d.ka * 100, "first-order oral absorption rate"),
            Parameter(f"{n}F", "1", d.F, 0.0, 1.0, "oral bioavailability"),
        ]
        if self.compartments == 2:
            out += [
                Parameter(f"{n}Q", f"L/{t}", d.Q, d.Q / 100, d.Q * 100, "intercompartmental clearance"),
                Parameter(f"{n}V2", "L", d.V2, d.V2 / 100, d.V2 * 100, "peripheral volume of distribution"),
            ]
        return tuple(out)

    def inputs(self) -> tuple[Input, ...]:
        n, t = self.prefix, self.time_unit
        return (
            Input(f"{n}infusion", f"mg/{t}", "rate", "zero-order IV infusion into central"),
            Input(f"{n}dose_iv", "mg", "bolus", "IV bolus dose", target=f"{n}central"),
            Input(f"{n}dose_oral", "mg", "bolus", "oral dose, scaled by F", target=f"{n}depot",
                  scale=lambda p: p[f"{n}F"]),
        )  # fmt: skip

    def rhs(self, x: Any, infusion: Any, p: ParamMap) -> Any:
        """dx/dt of the PK states (``x`` holds them first), given the infusion rate."""
        n = self.prefix
        absorption = p[f"{n}ka"] * x[DEPOT]
        elimination = p[f"{n}CL"] / p[f"{n}V"] * x[CENTRAL]
        if self.compartments == 1:
            return jnp.stack([-absorption, absorption + infusion - elimination])
        to_peripheral = p[f"{n}Q"] / p[f"{n}V"] * x[CENTRAL] - p[f"{n}Q"] / p[f"{n}V2"] * x[PERIPHERAL]
        return jnp.stack([-absorption, absorption + infusion - elimination - to_peripheral, to_peripheral])

    def initial_state(self, p: ParamMap) -> Any:
        """No drug in the body."""
        return jnp.zeros((self.n_states, *jnp.shape(p[f"{self.prefix}V"])))

    def concentration(self, x: Any, p: ParamMap) -> Any:
        """Central concentration, mg/L."""
        return x[CENTRAL] / p[f"{self.prefix}V"]

    def elimination_rate(self, x: Any, p: ParamMap) -> Any:
        """Drug eliminated per time unit (mg per time unit): the K-PD exposure rate."""
        return p[f"{self.prefix}CL"] / p[f"{self.prefix}V"] * x[CENTRAL]
