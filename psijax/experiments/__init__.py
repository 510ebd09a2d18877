"""Small, reproducible studies shared by the ``psijax`` CLI and the scripts in ``benchmarks/``."""
