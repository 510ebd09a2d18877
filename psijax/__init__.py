"""psijax: inference-time reward alignment of score and rectified-flow models in JAX.

The MCMC kernels are exposed BlackJAX-style::

    import psijax
    algorithm = psijax.pcnl(logdensity_fn, step_size=0.5)   # a blackjax SamplingAlgorithm
    state = algorithm.init(position)
    state, info = jax.jit(algorithm.step)(rng_key, state)

and ``psijax.pcnl.init`` / ``psijax.pcnl.build_kernel`` are the pieces BlackJAX's SMC takes.
"""

from blackjax import generate_top_level_api_from

from psijax import align, flows, mcmc, metrics, models, smc
from psijax.mcmc import pcn as _pcn
from psijax.mcmc import pcnl as _pcnl
from psijax.mcmc import ula as _ula

__version__ = "0.1.0"

pcn = generate_top_level_api_from(_pcn)
pcnl = generate_top_level_api_from(_pcnl)
ula = generate_top_level_api_from(_ula)

__all__ = [
    "align",
    "flows",
    "mcmc",
    "metrics",
    "models",
    "smc",
    "pcn",
    "pcnl",
    "ula",
    "__version__",
]
