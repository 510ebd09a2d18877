"""``import psijax`` loads JAX, BlackJAX and the kernels only; the rest loads on first use."""

import subprocess
import sys

SCRIPT = """
import sys
import psijax
heavy = [m for m in ("flax", "diffrax", "psijax.models.flux", "torch", "psijax.align")
         if m in sys.modules]
psijax.align.psi_sampler, psijax.flows.flow_map  # the lazy names resolve
after_align = "flax" in sys.modules
psijax.models.flux.FluxConfig
print(heavy, after_align, "flax" in sys.modules)
"""


def test_import_psijax_does_not_load_the_models():
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=300
    ).stdout.split("\n")[-2]
    assert out == "[] False True", out
