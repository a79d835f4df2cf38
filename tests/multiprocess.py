"""Local ``python -m train`` runs as ``jax.distributed`` processes on 127.0.0.1, for the tests.

Each process gets ``8 // processes`` virtual CPU devices, so that a run of several processes
trains on the 8 devices of the in-process tests (tests/conftest.py).
"""

import os
import socket
import subprocess
import sys

from tests import compile_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, for the coordinator."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(devices: int) -> dict[str, str]:
    """This environment with ``devices`` CPU devices, CPU only, and the repository importable."""
    return {
        **os.environ,
        "XLA_FLAGS": compile_flags.with_devices(os.environ["XLA_FLAGS"], devices),
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


def config_flags(config, keys) -> list[str]:
    """``--config.KEY=VALUE`` for each of ``keys`` (dotted for nested ones) of ``config``."""
    flags = []
    for key in keys:
        value = config
        for part in key.split("."):
            value = value[part]
        flags.append(f"--config.{key}={value}")
    return flags


def start_training(workdir, flags, logs, processes=2) -> list[subprocess.Popen]:
    """``python -m train`` with the default recipe and ``flags``, as ``processes`` processes.

    Process ``i`` writes its output (stdout and stderr) to ``logs/process{i}.log``, which a test
    can read while the run goes on (a pipe nobody reads could fill and stall it).
    """
    port = free_port()
    env = environment(8 // processes)
    started = []
    for index in range(processes):
        distributed = (
            [
                f"--coordinator_address=127.0.0.1:{port}",
                f"--num_processes={processes}",
                f"--process_id={index}",
            ]
            if processes > 1
            else ["--distributed=off"]
        )
        command = [sys.executable, "-m", "train", f"--workdir={workdir}"]
        command += ["--config=train/configs/default.py", *flags, *distributed]
        with open(log_path(logs, index), "w") as output:  # The child keeps its own copy.
            started.append(
                subprocess.Popen(
                    command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT
                )
            )
    return started


def log_path(logs, index) -> str:
    return os.path.join(logs, f"process{index}.log")


def finish(processes, logs, timeout=400) -> list[str]:
    """Waits for ``processes`` (killing them all if one outlives ``timeout`` s); their outputs."""
    try:
        for p in processes:
            p.wait(timeout=timeout)
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    texts = []
    for index in range(len(processes)):
        with open(log_path(logs, index)) as f:
            texts.append(f.read())
    return texts
