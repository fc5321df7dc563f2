"""In-silico trials: a trial specification run on a virtual cohort, analysed like a real one.

A trial (``TrialSpec``) names a population and its eligibility criteria, the arms and how
participants are randomized to them, the visits and what is measured, the endpoints and
the analysis plan. ``run_trial`` screens, randomizes and simulates R replicate trials in
one chunked cohort run; ``analyse`` fits the planned analyses (statsmodels, lifelines);
``power`` estimates operating characteristics by simulation; ``external_control`` builds a
synthetic external control arm; ``prognostic_scores`` gives each participant's twin-predicted
control outcome for PROCOVA-style adjustment; ``virtual_twins`` finds subgroups.
"""

from typing import TYPE_CHECKING

from twinloop._lazy import attach

if TYPE_CHECKING:
    from twinloop.trials.analysis import AnalysisPlan as AnalysisPlan
    from twinloop.trials.analysis import analyse as analyse
    from twinloop.trials.analysis import kaplan_meier as kaplan_meier
    from twinloop.trials.analysis import km_medians as km_medians
    from twinloop.trials.artifact import read_trial as read_trial
    from twinloop.trials.artifact import write_trial as write_trial
    from twinloop.trials.context import SpecContext as SpecContext
    from twinloop.trials.external import ExternalControl as ExternalControl
    from twinloop.trials.external import ExternalControlSpec as ExternalControlSpec
    from twinloop.trials.external import external_control as external_control
    from twinloop.trials.power import PowerResult as PowerResult
    from twinloop.trials.power import closed_form_power as closed_form_power
    from twinloop.trials.power import power as power
    from twinloop.trials.procova import PrognosticSpec as PrognosticSpec
    from twinloop.trials.procova import procova_summary as procova_summary
    from twinloop.trials.procova import prognostic_scores as prognostic_scores
    from twinloop.trials.procova import with_prognostic as with_prognostic
    from twinloop.trials.run import TrialData as TrialData
    from twinloop.trials.run import run_trial as run_trial
    from twinloop.trials.run import simulate_participants as simulate_participants
    from twinloop.trials.spec import TrialSpec as TrialSpec
    from twinloop.trials.subgroups import SubgroupResult as SubgroupResult
    from twinloop.trials.subgroups import SubgroupSpec as SubgroupSpec
    from twinloop.trials.subgroups import subgroup_analysis as subgroup_analysis
    from twinloop.trials.subgroups import subgroup_effects as subgroup_effects
    from twinloop.trials.subgroups import virtual_twins as virtual_twins

__getattr__, __dir__, __all__ = attach(__name__, __file__)
