"""The XLA flags the tests run under: fast compiles and eight virtual CPU devices.

XLA reads ``XLA_FLAGS`` when jax initializes its backends, so tests/conftest.py calls
:func:`configure` before any test module imports jax. The first process to do so decides;
pytest-xdist workers and the subprocesses that tests start (multi-host runs, notebook
kernels) inherit the variable.
"""

import os
import subprocess
import sys


def name(flag: str) -> str:
    """``--xla_name=value`` -> ``--xla_name``."""
    return flag.split("=", 1)[0]


# The tests compile far more than they run: hundreds of small programs, each executed a few
# times on tiny batches. LLVM's optimization level 0 halves XLA's CPU compile times (measured:
# a ResNet-20 + SBN train step 19 s -> 10 s, its init 23 s -> 5 s) at the cost of slower
# programs (3.5x for that step), and moves float32 results at rounding level only (other
# instruction selection; XLA's HLO passes are the same): comparisons here state tolerances
# relative to the values compared. At that level XLA's older loop emitters for fused
# operations compile in about half the time of the fusion emitters it uses by default
# (measured on a 2-core Xeon, one process: a ResNet-8 + SBN train step 2.2 s -> 1.3 s, 100
# small SBN programs 13.1 s -> 6.6 s, and the step runs as fast; same HLO, other loops). And
# one LLVM module a program instead of several compiled on threads: the tests' processes keep
# both cores busy already (the 100 programs 7.2 s -> 5.8 s alone).
FAST_COMPILE = (
    "--xla_backend_optimization_level=0",
    "--xla_cpu_use_fusion_emitters=false",
    "--xla_cpu_parallel_codegen_split_count=1",
)
# The notebook kernels train and measure for hundreds of steps, which level 0 runs 10x slower
# than XLA's default, level 2. Level 1 with the older emitters runs that ResNet-8 step as fast as
# level 2 (0.07 s against 0.06 s for 20 steps) and compiles it in half the time (2.0 s against
# 4.3 s; 2.6 s in one LLVM module, so the kernels split it again). Measured alone in quick mode,
# notebook 04 took 26 s instead of 36 s at level 2, 02 21 s instead of 29 s and 03 17 s instead
# of 19 s at level 0; the others took the same.
NOTEBOOK_LEVEL = "--xla_backend_optimization_level=1"
DEVICES = "--xla_force_host_platform_device_count=8"
# The notebooks run on one device (XLA's default), at their own level, in split LLVM modules.
_NOT_IN_NOTEBOOKS = (
    "--xla_backend_optimization_level",
    "--xla_cpu_parallel_codegen_split_count",
    name(DEVICES),
)
_DECIDED = "SBN_JAX_TEST_XLA_FLAGS"


def accepted(flags: list[str]) -> list[str]:
    """Those of ``flags`` that this jaxlib knows: XLA ends the process on a flag it does not know,
    and a later jaxlib may drop one of these. One process tries them all (two seconds to start
    JAX), one a flag only when that fails."""

    def known(flags):
        probe = subprocess.run(
            [sys.executable, "-c", "import jax; jax.devices()"],
            env={**os.environ, "XLA_FLAGS": " ".join(flags), "JAX_PLATFORMS": "cpu"},
            capture_output=True,
        )
        return probe.returncode == 0

    if not flags or known(flags):
        return flags
    return [flag for flag in flags if known([flag])]


def configure() -> None:
    """Adds the fast-compile flags this jaxlib knows, unless the caller set them (then the
    caller's value is kept), and the eight devices."""
    if _DECIDED in os.environ:
        return
    flags = os.environ.get("XLA_FLAGS", "").split()
    given = {name(f) for f in flags}
    flags += accepted([f for f in FAST_COMPILE if name(f) not in given])
    flags.append(DEVICES)
    os.environ["XLA_FLAGS"] = os.environ[_DECIDED] = " ".join(flags)


def with_devices(flags: str, count: int) -> str:
    """``flags`` with ``count`` virtual CPU devices instead of the eight (or any other number)."""
    kept = [f for f in flags.split() if name(f) != name(DEVICES)]
    return " ".join([*kept, f"{name(DEVICES)}={count}"])


def for_notebooks(flags: str) -> str:
    """``flags`` on one device, at :data:`NOTEBOOK_LEVEL`, their LLVM modules split as by
    default."""
    kept = [f for f in flags.split() if name(f) not in _NOT_IN_NOTEBOOKS]
    return " ".join([*kept, NOTEBOOK_LEVEL])
