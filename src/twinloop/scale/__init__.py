"""Running the chunks of long jobs on a Dask cluster.

``open_runner`` gives a :class:`~twinloop._chunks.ChunkRunner`: one worker process per
core on this machine (a ``distributed.LocalCluster``), an existing cluster reached by its
scheduler's address (``dask scheduler`` + ``dask worker``, or dask-jobqueue on SLURM/PBS,
see ``docs/scale.md``), or this process. Products hand it their chunks
(``twinloop.products.dataset.generate(..., runner=...)``); the files are the same bytes
wherever the chunks ran.

Example:
    >>> from twinloop.scale import open_runner
    >>> with open_runner(workers=2) as runner:  # doctest: +SKIP
    ...     generate(spec, "out/product", runner=runner)
"""

from typing import TYPE_CHECKING

from twinloop._lazy import attach

if TYPE_CHECKING:
    from twinloop.scale.cluster import check_scheduler as check_scheduler
    from twinloop.scale.cluster import check_workers as check_workers
    from twinloop.scale.cluster import cores as cores
    from twinloop.scale.cluster import default_workers as default_workers
    from twinloop.scale.cluster import open_runner as open_runner
    from twinloop.scale.runner import DaskRunner as DaskRunner

__getattr__, __dir__, __all__ = attach(__name__, __file__)
