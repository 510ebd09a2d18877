"""Small, reproducible studies shared by the ``psijax`` CLI and the scripts in ``benchmarks/``.

- :mod:`.methods`: method names (``"psi_sampler"``, ``"tempered[flow_map]"`` …) and their sizing
  at equal NFE, shared by the studies.
- :mod:`.toy` / :mod:`.toy_report`: the 2D Gaussian-mixture study with exact targets
  (``psijax demo``, ``psijax toy``).
- :mod:`.acceptance`: acceptance against dimension of pCN, pCNL, ULA and MALA
  (``psijax acceptance``).
- :mod:`.digits` / :mod:`.digits_report`: alignment of the digits flow with seen and held-out
  metrics (``psijax digits``).
- :mod:`.bench`: wall-clock timing of the samplers (``psijax bench``).
- :mod:`.records`: strict JSON and CSV result files.

The submodules are imported on demand (``from psijax.experiments import toy``).
"""
