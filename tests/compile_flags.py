"""The XLA flags the tests run under: fast compiles and eight virtual CPU devices.

XLA reads ``XLA_FLAGS`` when jax initializes its backends, so tests/conftest.py calls
:func:`configure` before any test module imports jax. The first process to do so decides;
pytest-xdist workers and the subprocesses that tests start (multi-host runs, notebook
kernels) inherit the variable.
"""

import os
import subprocess
import sys

# The tests compile far more than they run: hundreds of small programs, each executed a few
# times on tiny batches. LLVM's optimization level 0 halves XLA's CPU compile times (measured:
# a ResNet-20 + SBN train step 19 s -> 10 s, its init 23 s -> 5 s) at the cost of slower
# programs (3.5x for that step), and moves float32 results at rounding level only (other
# instruction selection; XLA's HLO passes are the same): comparisons here state tolerances
# relative to the values compared. At that level XLA's older loop emitters for fused
# operations compile in about half the time of the fusion emitters it uses by default
# (measured on a 2-core Xeon, one process: a ResNet-8 + SBN train step 2.2 s -> 1.3 s, 100
# small SBN programs 13.1 s -> 6.6 s, and the step runs as fast; same HLO, other loops).
FAST_COMPILE = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")
# The notebook kernels train and measure for hundreds of steps, which level 0 runs 10x slower
# than XLA's default, level 2. Level 1 with the older emitters runs that ResNet-8 step as fast as
# level 2 (0.07 s against 0.06 s for 20 steps) and compiles it in half the time (2.0 s against
# 4.3 s). Measured alone in quick mode, notebook 04 took 26 s instead of 36 s at level 2, 02 21 s
# instead of 29 s and 03 17 s instead of 19 s at level 0; the others took the same.
NOTEBOOK_LEVEL = "--xla_backend_optimization_level=1"
DEVICES = "--xla_force_host_platform_device_count=8"
_DECIDED = "SBN_JAX_TEST_XLA_FLAGS"


def name(flag: str) -> str:
    """``--xla_name=value`` -> ``--xla_name``."""
    return flag.split("=", 1)[0]


def accepted(flag: str) -> bool:
    """Whether this jaxlib knows ``flag``: XLA ends the process on a flag it does not know, and a
    later jaxlib may drop the emitters' flag."""
    probe = subprocess.run(
        [sys.executable, "-c", "import jax; jax.devices()"],
        env={**os.environ, "XLA_FLAGS": flag, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
    )
    return probe.returncode == 0


def configure() -> None:
    """Adds the fast-compile flags this jaxlib knows, unless the caller set them (then the
    caller's value is kept), and the eight devices."""
    if _DECIDED in os.environ:
        return
    flags = os.environ.get("XLA_FLAGS", "").split()
    given = {name(f) for f in flags}
    flags += [f for f in FAST_COMPILE if name(f) not in given and accepted(f)]
    flags.append(DEVICES)
    os.environ["XLA_FLAGS"] = os.environ[_DECIDED] = " ".join(flags)


def for_notebooks(flags: str) -> str:
    """``flags`` with the optimization level set to :data:`NOTEBOOK_LEVEL`'s."""
    kept = [f for f in flags.split() if name(f) != name(NOTEBOOK_LEVEL)]
    return " ".join([*kept, NOTEBOOK_LEVEL])
