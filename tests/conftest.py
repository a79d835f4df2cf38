"""Test setup: eight virtual CPU devices, fast compiles, and one compilation cache for the run.

XLA reads its flags when jax initializes its backends, so they are set here
(tests/compile_flags.py), before any test module imports jax.

Many tests compile the same programs again (a training run and its resumed twin,
the same layer under several parametrizations), so the run shares JAX's
persistent compilation cache through a temporary directory. The variable is set
by the first process that imports this file and inherited by pytest-xdist
workers and by the subprocesses that tests start (multi-host runs, notebook
kernels); the directory is removed when that first process finishes, unless the
caller chose it (``make test-fast`` keeps one between runs).
"""

import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, settings

from tests import compile_flags

compile_flags.configure()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_OWNS_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWNS_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="sbn_jax_jit_cache_")
# Every program goes into the cache, however short its compile: most of the tests' programs
# compile in well under JAX's default threshold of one second, and they are the ones compiled
# again (by the other worker, by "auto" tracing to the program of the impl it picks, by
# `make test-fast`, which keeps its cache between runs: Makefile).
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


# Hypothesis profiles for tests/test_fuzz.py. "fuzz" (loaded here, the one `make test` runs): a
# fixed seed and no example database, so every run draws the same examples; no deadline, since an
# example's time is mostly XLA compiling a new shape, which varies with the machine's load.
# "thorough" (pytest tests/test_fuzz.py --hypothesis-profile=thorough): ten times as many, from a
# new seed each run (Hypothesis prints the seed of a failure).
settings.register_profile(
    "fuzz",
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough", parent=settings.get_profile("fuzz"), max_examples=3000, derandomize=False
)
# "inner-loop" (`make test-fast`): a third of the examples, for a quicker loop; make test and CI
# run the full "fuzz" profile. Each example traces and lowers a new shape even when the compile
# cache has its program, so the count is what the fuzz test's time is.
settings.register_profile("inner-loop", parent=settings.get_profile("fuzz"), max_examples=100)
settings.load_profile("fuzz")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A tfds data_dir with the digits built, once per worker, for the training-loop tests."""
    from train import input_pipeline  # Imported here: jax must see XLA_FLAGS above first.
    from train.configs import default

    path = str(tmp_path_factory.mktemp("tfds"))
    config = default.get_config()
    config.data_dir = path
    input_pipeline.builder(config)
    return path


# Session scope, and defined here rather than in tests/test_train.py: tests of several modules
# share the run (test_train.py, test_preemption.py), and a fixture imported into a second
# module is a second fixture there, trained again.
@pytest.fixture(scope="session")
def reference(data_dir, tmp_path_factory):
    """An uninterrupted pmap run of tests/test_train.py's ``tiny_config`` on the 8 devices:
    (config, workdir, final state)."""
    from tests.test_train import tiny_config
    from train import train

    workdir = str(tmp_path_factory.mktemp("reference"))
    config = tiny_config(data_dir, parallelism="pmap")
    state = train.train_and_evaluate(config, workdir)
    return config, workdir, state


def pytest_sessionfinish(session, exitstatus):
    if _OWNS_CACHE:
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
    # Under pytest-xdist the reports of every worker reach the controller, which decides.
    if not hasattr(session.config, "workerinput") and _over_the_limit() and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# A slow test is a decision, not an accident: any test whose setup, call and teardown together
# take longer than this fails the run, unless it is on the allow-list below with its reason.
# Every test not listed took at most 24 s in the whole suite on the 2-core Xeon it was last timed
# on (docs/contributing.md); the limit leaves a factor 3.5 for slower or busier machines.
TEST_TIME_LIMIT_S = float(os.environ.get("SBN_JAX_TEST_TIME_LIMIT_S", 90))
_NOTEBOOK = "tests/test_notebooks.py::test_notebook_runs_without_errors_and_saves_its_figures"
SLOW_ALLOWED = {
    # Two launches of two training processes (preempted, resumed), each starting JAX and
    # TensorFlow, and the same run in this process (40 s there).
    "tests/test_preemption.py::"
    "test_two_processes_stop_at_one_step_on_sigterm_and_resume_to_the_one_process_state": (
        "two processes, two launches"
    ),
    # Compiles and trains 5 configurations x 2 seeds live (quick mode; 38 s there).
    f"{_NOTEBOOK}[04_training_digits.ipynb]": "notebook 04",
    # Eager passes through freshly initialized ResNets and a VGG, six variants each (29 s there).
    f"{_NOTEBOOK}[02_exploding_feature_maps.ipynb]": "notebook 02",
}
_durations: dict[str, float] = {}


def pytest_collection_modifyitems(config, items):
    """Slow tests first, so that the two workers do not end on one long test each."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_runtest_logreport(report):
    _durations[report.nodeid] = _durations.get(report.nodeid, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    over = _over_the_limit()
    if over:
        terminalreporter.section("tests over the time limit")
        for nodeid, seconds in over:
            terminalreporter.line(
                f"{seconds:6.1f} s  {nodeid} (limit {TEST_TIME_LIMIT_S:.0f} s; make it faster, "
                "or add it to SLOW_ALLOWED in tests/conftest.py with the reason)"
            )


def _over_the_limit():
    return sorted(
        (
            (nodeid, seconds)
            for nodeid, seconds in _durations.items()
            if seconds > TEST_TIME_LIMIT_S and nodeid not in SLOW_ALLOWED
        ),
        key=lambda entry: -entry[1],
    )
