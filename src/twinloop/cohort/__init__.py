"""Forward loop, part 1: populations, sampling designs, edge cases, virtual-population
selection and global sensitivity analysis."""

from typing import TYPE_CHECKING

from twinloop._lazy import attach

if TYPE_CHECKING:
    from twinloop.cohort.population import Cohort as Cohort
    from twinloop.cohort.population import LowAcceptanceWarning as LowAcceptanceWarning
    from twinloop.cohort.population import Population as Population
    from twinloop.cohort.population import Region as Region

__getattr__, __dir__, __all__ = attach(__name__, __file__)
