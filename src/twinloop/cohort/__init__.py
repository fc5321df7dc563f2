"""Forward loop, part 1: populations, sampling designs, edge cases, virtual-population
selection and global sensitivity analysis."""

from twinloop.cohort.population import Cohort as Cohort
from twinloop.cohort.population import LowAcceptanceWarning as LowAcceptanceWarning
from twinloop.cohort.population import Population as Population
from twinloop.cohort.population import Region as Region
