"""AI components: surrogate emulators, hybrid models with learned closure terms,
predictors trained on synthetic data, and their model cards."""

from typing import TYPE_CHECKING

from twinloop._config import ensure_jax
from twinloop._lazy import attach

ensure_jax()  # before any module of this package imports JAX

if TYPE_CHECKING:
    from twinloop.learn.card import ModelCard as ModelCard
    from twinloop.learn.closure import Closure as Closure
    from twinloop.learn.closure import Feature as Feature
    from twinloop.learn.closure import hybrid_model as hybrid_model
    from twinloop.learn.predictor import Predictor as Predictor
    from twinloop.learn.predictor import evaluate as evaluate
    from twinloop.learn.predictor import tstr as tstr
    from twinloop.learn.surrogate import Surrogate as Surrogate
    from twinloop.learn.ude import ClosureTrainer as ClosureTrainer
    from twinloop.learn.ude import SeriesSet as SeriesSet
    from twinloop.learn.ude import map_estimates as map_estimates

__getattr__, __dir__, __all__ = attach(__name__, __file__)
