"""psijax: inference-time reward alignment of score and rectified-flow models in JAX.

The MCMC kernels are exposed BlackJAX-style::

    import psijax
    algorithm = psijax.pcnl(logdensity_fn, step_size=0.5)   # a blackjax SamplingAlgorithm
    state = algorithm.init(position)
    state, info = jax.jit(algorithm.step)(rng_key, state)

and ``psijax.pcnl.init`` / ``psijax.pcnl.build_kernel`` are the pieces BlackJAX's SMC takes.

The subpackages (``align``, ``discrete``, ``flows``, ``mcmc``, ``metrics``, ``models``, ``smc``,
``experiments``) and the kernels are imported on first use, so ``import psijax`` loads nothing
heavy (the ``psijax`` command answers ``--help`` and ``--version`` without JAX): the kernels
(``psijax.pcnl`` …) load JAX and BlackJAX, and the models (Flax, FLUX) and diffrax load when
something asks for them.
"""

import importlib

__version__ = "0.1.0"

_KERNELS = ("pcn", "pcnl", "ula")

_SUBMODULES = ("align", "discrete", "experiments", "flows", "mcmc", "metrics", "models", "smc")

__all__ = [*_SUBMODULES, "pcn", "pcnl", "ula", "__version__"]


def __getattr__(name: str):
    if name in _KERNELS:
        from psijax.mcmc import api

        return getattr(api, name)
    if name in _SUBMODULES:
        return importlib.import_module(f"psijax.{name}")
    raise AttributeError(f"module 'psijax' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBMODULES) | set(_KERNELS))
