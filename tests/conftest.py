"""Test setup: eight virtual CPU devices, and one compilation cache for the whole run.

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

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_OWNS_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWNS_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="sbn_jax_jit_cache_")


def pytest_sessionfinish(session, exitstatus):
    if _OWNS_CACHE:
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
