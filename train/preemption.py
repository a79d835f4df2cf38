"""Preemption: a SIGTERM ends the loop at the next step boundary, with a checkpoint of that step.

Preemptible capacity announces the end of a job with SIGTERM and a grace period. Without a
handler the process dies at once and loses every step since its last periodic checkpoint. With
:class:`PreemptionWatch` (which ``train_and_evaluate`` holds while it trains) the loop asks at
every step boundary whether it must stop; when it must, it saves that step's checkpoint, waits
for the write, logs one line naming the step and raises :class:`Preempted`, whose exit status is
:data:`PREEMPTED_EXIT_STATUS`. Running the same command again resumes from that checkpoint and
ends where an uninterrupted run ends.

One process: the watch installs a SIGTERM handler that only sets a flag, read at the next step
boundary; the previous handler is back once the loop ends.

Several ``jax.distributed`` processes: every process must save the same step, or the checkpoint
would mix steps (and the processes' collectives would hang). That is JAX's preemption sync point,
which orbax's ``CheckpointManager.reached_preemption`` asks: ``jax.distributed.initialize`` starts
the preemption service (``jax_enable_preemption_service``, on by default), whose own handler
catches SIGTERM in any process and tells every other one; each process then reports the last
step it was asked about, and the step after the largest of these is the one every process saves.
So every process must ask at every step (the loop does). A second SIGTERM during the write is
absorbed by either handler, and orbax writes each checkpoint to a temporary directory that it
renames only once complete, so an interrupted write never leaves a checkpoint that fails to
restore.
"""

from __future__ import annotations

import signal
import threading
import types
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

# EX_TEMPFAIL of sysexits.h: a temporary failure, the same command should be retried.
PREEMPTED_EXIT_STATUS = 75


class Preempted(SystemExit):
    """The run saved a checkpoint and stopped on SIGTERM; its ``code`` is the exit status.

    ``cause`` names what stopped it: this process's SIGTERM, or (several processes) a SIGTERM
    to any process of the run.
    """

    def __init__(self, step: int, directory: str, cause: str = "SIGTERM"):
        super().__init__(PREEMPTED_EXIT_STATUS)
        self.step = step
        self.message = (
            f"Preempted ({cause}): saved the checkpoint of step {step} in {directory}; run the "
            "same command again to resume."
        )

    def __str__(self) -> str:
        return self.message


class PreemptionWatch:
    """Whether the loop must save and stop at a step boundary (a context manager).

    One process: SIGTERM sets a flag, when the watch is entered in the main thread (Python runs
    signal handlers there; elsewhere :meth:`reached` is always False). Several processes: the
    preemption sync point of ``manager`` (see the module docstring), the same step on every
    process.
    """

    def __init__(self, manager: ocp.CheckpointManager | None = None) -> None:
        self.signalled = False
        self._manager = manager
        self._previous: Any = None
        self._installed = False
        self._synced = jax.process_count() > 1

    def __enter__(self) -> PreemptionWatch:
        if not self._synced and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        if not self.signalled:
            logging.warning("SIGTERM: saving a checkpoint at the end of this step, then stopping.")
        self.signalled = True

    def reached(self, step: int) -> bool:
        """Whether the run must save ``step`` and stop.

        With several processes this takes part in the sync point's protocol: every process must
        call it at every step, in order.
        """
        if self._synced:
            if self._manager is None:
                raise ValueError("a run of several processes needs the checkpoint manager")
            self.signalled = self._manager.reached_preemption(step)
        return self.signalled

    def stopped(self, step: int, directory: str) -> Preempted:
        """The :class:`Preempted` to raise once the checkpoint of ``step`` is written; logs it."""
        cause = "SIGTERM to a process of this run" if self._synced else "SIGTERM"
        stop = Preempted(step, directory, cause)
        logging.warning("%s", stop)
        return stop
