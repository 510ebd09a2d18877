"""Test-session settings shared by every test."""

import os

# The suite's time goes mostly to compiling many small programs, and little to running them:
# LLVM's optimisations of XLA:CPU's generated code are skipped (about half the time of the
# compile-heavy files, the numbers unchanged within every test's tolerance). The flag reaches
# the processes the tests start (notebook kernels, CLI runs, 8-device subprocesses), since XLA
# reads it when its backend starts. A flag the user sets wins.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()

import jax  # noqa: E402

# Tests compare float32 results at tolerances of 1e-5 to 1e-4. On GPUs, XLA runs float32
# matmuls in TF32 by default (relative errors near 5e-4 at FLUX's width, measured on an H100),
# so the whole session asks for full float32 matmuls; on CPUs this changes nothing.
jax.config.update("jax_default_matmul_precision", "highest")
