"""The top-level kernel objects ``psijax.pcn``, ``psijax.pcnl`` and ``psijax.ula``.

Each is BlackJAX's ``GenerateSamplingAPI`` of its module (what
``blackjax.generate_top_level_api_from`` returns): ``psijax.pcnl(logdensity_fn, step_size)``
builds a ``blackjax.SamplingAlgorithm``, and ``psijax.pcnl.init`` /
``psijax.pcnl.build_kernel`` are the pieces BlackJAX's SMC and psijax's
:class:`~psijax.align.chains.Chains` take. They also print as their names and hash by
identity, so they can be the defaults of frozen configuration objects.
"""

import blackjax

from psijax.mcmc import pcn as pcn_module
from psijax.mcmc import pcnl as pcnl_module
from psijax.mcmc import ula as ula_module

__all__ = ["KernelAPI", "pcn", "pcnl", "ula"]


class KernelAPI(blackjax.GenerateSamplingAPI):
    """``blackjax.GenerateSamplingAPI`` of a kernel module, with a readable ``repr``.

    ``MAX_STEP_SIZE`` is the module's upper bound on the step size (``inf`` if it has none) and
    ``HAS_ACCEPT_STEP`` whether its ``acceptance_rate`` is a Metropolis acceptance rate.
    """

    __hash__ = object.__hash__

    def __init__(self, module, name: str):
        super().__init__(module.as_top_level_api, module.init, module.build_kernel)
        self.name = name
        self.MAX_STEP_SIZE = getattr(module, "MAX_STEP_SIZE", float("inf"))
        self.HAS_ACCEPT_STEP = getattr(module, "HAS_ACCEPT_STEP", True)

    def __repr__(self) -> str:
        return self.name


pcn = KernelAPI(pcn_module, "psijax.pcn")
pcnl = KernelAPI(pcnl_module, "psijax.pcnl")
ula = KernelAPI(ula_module, "psijax.ula")
