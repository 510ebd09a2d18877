"""Test-session settings shared by every test."""

import jax

# Tests compare float32 results at tolerances of 1e-5 to 1e-4. On GPUs, XLA runs float32
# matmuls in TF32 by default (relative errors near 5e-4 at FLUX's width, measured on an H100),
# so the whole session asks for full float32 matmuls; on CPUs this changes nothing.
jax.config.update("jax_default_matmul_precision", "highest")
