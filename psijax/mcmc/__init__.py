"""BlackJAX-style MCMC kernels on ``π(x) ∝ N(x; 0, I)·exp(Φ(x))`` and their step-size adaptation.

Each module follows the shape of ``blackjax.mcmc.mala``: State and Info NamedTuples, ``init``,
``build_kernel``, ``as_top_level_api``. The top-level ``psijax.pcn``, ``psijax.pcnl`` and
``psijax.ula`` are BlackJAX ``GenerateSamplingAPI`` objects of them (:mod:`psijax.mcmc.api`).
"""

from psijax.mcmc import adaptation, api, pcn, pcnl, ula

__all__ = ["adaptation", "api", "pcn", "pcnl", "ula"]
