"""Test setup: eight virtual CPU devices, fast compiles, and one compilation cache for the run.

XLA reads the flag when jax initializes its backends, so it is set here, before
any test module imports jax.

Many tests compile the same programs again (a training run and its resumed twin,
the same layer under several parametrizations), so the run shares JAX's
persistent compilation cache through a temporary directory. The variable is set
by the first process that imports this file and inherited by pytest-xdist
workers and by the subprocesses that tests start (multi-host runs, notebook
kernels); the directory is removed when that first process finishes.
"""

import os
import shutil
import tempfile

# The tests compile far more than they run: hundreds of small programs, each executed a few
# times on tiny batches. LLVM's optimization level 0 halves XLA's CPU compile times (measured:
# a ResNet-20 + SBN train step 19 s -> 10 s, its init 23 s -> 5 s) and leaves the math alone:
# XLA's own HLO passes still run, and without fast-math LLVM may not reorder float arithmetic at
# any level. The notebook kernels, which train for hundreds of steps, drop it
# (tests/test_notebooks.py). A flag the caller set is kept.
FAST_COMPILE = "--xla_backend_optimization_level=0"
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_backend_optimization_level" not in _flags:
    _flags += " " + FAST_COMPILE
os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_OWNS_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWNS_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="sbn_jax_jit_cache_")


def pytest_sessionfinish(session, exitstatus):
    if _OWNS_CACHE:
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
